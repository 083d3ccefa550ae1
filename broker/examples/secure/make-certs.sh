#!/bin/sh
# Throwaway certificates for this example, written next to this script:
#   ca.pem, ca.key          a CA made for the purpose (clients trust ca.pem)
#   server.pem, server.key  the broker's certificate: CN=localhost, SAN DNS:localhost, IP:127.0.0.1
#   client.pem, client.key  a client certificate, CN=demo (AMQP EXTERNAL logs in as demo)
# For a real deployment use certificates from your own CA and keep the keys
# private. Needs openssl (1.1.1 or later). Existing files are overwritten.
set -eu
cd "$(dirname "$0")"
DAYS="${DAYS:-825}"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days "$DAYS" -sha256 \
    -subj "/CN=broker example CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"

issue() { # name CN extensions
    key "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -out "$1.pem" \
        -days "$DAYS" -sha256 -set_serial "0x$(openssl rand -hex 16)" -extfile "$1.ext"
    rm -f "$1.csr" "$1.ext"
}

issue server localhost "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"

issue client demo "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

# Certificates are public; keys stay 0600.
chmod 644 ca.pem server.pem client.pem
echo "wrote ca.pem ca.key server.pem server.key client.pem client.key in $(pwd)"
