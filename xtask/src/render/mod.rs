//! Reports as text: Markdown, HTML (with SVG charts) and terminal lines.

pub mod ab;
pub mod chart;
pub mod compare;
pub mod environment;
pub mod escape;
pub mod gate;
pub mod how_measured;
pub mod html;
pub mod manifest;
pub mod markdown;
pub mod max_rate;
pub mod micro;
pub mod regression;
pub mod terminal;
