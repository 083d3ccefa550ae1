//! `broker passwd`: adds, updates or deletes a user in a password file, as
//! mosquitto_passwd does (prompting twice without echo, `-b` for the
//! password on the command line, `-D` to delete).

use std::io::{BufRead, IsTerminal, Write};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;

use broker::auth::passwd::{check_user_name, DEFAULT_ITERATIONS};
use broker::auth::{PasswordEntry, PasswordFile};

#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// Batch mode: the password is the third argument (it shows in the
    /// process list and shell history; prefer the prompt).
    #[arg(short = 'b')]
    pub batch: bool,
    /// Delete USER from FILE.
    #[arg(short = 'D', conflicts_with = "batch")]
    pub delete: bool,
    /// PBKDF2-HMAC-SHA256 iterations of the login hash (each login costs
    /// this many; SCRAM keys always use 4096).
    #[arg(long, short = 'I', value_name = "N", default_value_t = DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(1000..))]
    pub iterations: u32,
    /// The password file (created when missing; written with mode 0600).
    pub file: PathBuf,
    pub user: String,
    /// With -b only.
    pub password: Option<String>,
}

/// Runs the command: 0 done, 2 bad usage or input, 1 the file could not be written.
pub fn run(args: &PasswdArgs) -> ExitCode {
    match apply(args) {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn apply(args: &PasswdArgs) -> Result<String, (u8, String)> {
    let bad = |m: String| (2u8, m);
    let file_name = args.file.display();
    check_user_name(&args.user).map_err(|m| bad(format!("USER: {m}")))?;
    let mut file = match args.file.try_exists() {
        Ok(true) => PasswordFile::load(&args.file).map_err(|e| bad(format!("{file_name}: {e}")))?,
        Ok(false) if args.delete => {
            return Err(bad(format!("{file_name}: no such file")));
        }
        Ok(false) => PasswordFile::default(),
        Err(e) => return Err(bad(format!("{file_name}: {e}"))),
    };
    let done = if args.delete {
        if args.password.is_some() {
            return Err(bad("-D takes FILE USER, no password".into()));
        }
        if file.users.remove(&args.user).is_none() {
            return Err(bad(format!("{file_name}: no user `{}`", args.user)));
        }
        format!("deleted user `{}` from {file_name}", args.user)
    } else {
        let password = match (args.batch, &args.password) {
            (true, Some(p)) => p.clone(),
            (true, None) => {
                return Err(bad(
                    "-b needs the password: broker passwd -b FILE USER PASSWORD".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(bad(
                    "a password on the command line needs -b (or leave it out to be prompted)"
                        .into(),
                ))
            }
            (false, None) => prompt_twice().map_err(bad)?,
        };
        if password.is_empty() {
            return Err(bad("the password is empty".into()));
        }
        let iterations = NonZeroU32::new(args.iterations).expect("range starts at 1000");
        let entry = PasswordEntry::new(&password, iterations).map_err(|m| (1, m))?;
        let verb = match file.users.insert(args.user.clone(), entry) {
            Some(_) => "updated",
            None => "added",
        };
        format!("{verb} user `{}` in {file_name}", args.user)
    };
    file.save(&args.file)
        .map_err(|e| (1, format!("cannot write {file_name}: {e}")))?;
    Ok(done)
}

/// Asks for the password twice on the terminal, without echo.
fn prompt_twice() -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err("standard input is not a terminal, so the password cannot be prompted for: use `broker passwd -b FILE USER PASSWORD`".into());
    }
    let first = read_hidden("Password: ")?;
    let second = read_hidden("Reenter password: ")?;
    if first != second {
        return Err("the passwords do not match".into());
    }
    Ok(first)
}

fn read_hidden(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let echo = EchoOff::new();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(echo);
    eprintln!();
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Terminal echo switched off on stdin until dropped.
struct EchoOff {
    #[cfg(unix)]
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> EchoOff {
        #[cfg(unix)]
        {
            // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut t) != 0 {
                    return EchoOff { saved: None };
                }
                let saved = t;
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &t);
                EchoOff { saved: Some(saved) }
            }
        }
        #[cfg(not(unix))]
        EchoOff {}
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}
