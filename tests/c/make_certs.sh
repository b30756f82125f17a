#!/usr/bin/env bash
# Test PKI for the C example tests, generated fresh with the openssl CLI:
#   ca.pem/ca.key                 test CA
#   server.pem/server.key         localhost, 127.0.0.1, ::1; signed by the CA
#   server_encrypted.key          server.key as encrypted PKCS#8, passphrase "secret"
#   client.pem/client.key         client certificate signed by the CA
#   untrusted_client.pem/.key     self-signed client certificate (issuer == subject, CA:FALSE)
#   selfsigned_ca_client.pem/.key self-signed client certificate as `openssl req -x509`
#                                 makes it by default (CA:TRUE)
#   other_ca.pem, other_client.pem/.key   a client certificate from another CA
# usage: make_certs.sh DIR
set -euo pipefail
dir="${1:?usage: make_certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"

days=2
newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
serial() { echo "0x$(openssl rand -hex 8)"; }

ca() { # name subject
  openssl req -x509 "${newkey[@]}" -keyout "$1.key" -out "$1.pem" -days "$days" -subj "$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() { # name subject ca extensions
  openssl req -new "${newkey[@]}" -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf '%b' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -set_serial "$(serial)" \
    -days "$days" -out "$1.pem" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

common='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'
ca ca "/CN=sslserver test CA"
ca other_ca "/CN=some other CA"
leaf server "/CN=localhost" ca "${common}extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
leaf client "/CN=test client" ca "${common}extendedKeyUsage=clientAuth\n"
leaf other_client "/CN=other client" other_ca "${common}extendedKeyUsage=clientAuth\n"
# Self-signed end-entity certificate (CA:FALSE).
openssl req -x509 "${newkey[@]}" -keyout untrusted_client.key -out untrusted_client.pem \
  -days "$days" -subj "/CN=untrusted client" -addext "basicConstraints=critical,CA:FALSE" \
  -addext "extendedKeyUsage=clientAuth" -addext "keyUsage=critical,digitalSignature" 2>/dev/null
# What `openssl req -x509` makes by default: self-signed with CA:TRUE.
openssl req -x509 "${newkey[@]}" -keyout selfsigned_ca_client.key -out selfsigned_ca_client.pem \
  -days "$days" -subj "/CN=self-signed client" 2>/dev/null
openssl pkcs8 -topk8 -v2 aes-256-cbc -in server.key -out server_encrypted.key -passout pass:secret
