#!/usr/bin/env bash
# Development secrets for a SASL_SSL Kafka broker: a CA, the broker's key and certificate,
# SCRAM users with random passwords. For the local secured broker (broker.sh with
# KAFKA_SASL_SSL_DIR), the tests and `docker compose -f docker-compose.yml -f
# docker-compose.secured.yml`. Never for production: the CA key sits next to the rest.
#
#   deploy/kafka/dev-secrets.sh DIR [NAME=PASSWORD ...]
#
# DIR receives
#   ca.pem, ca.key           the CA (clients trust ca.pem: JOURNEYSTREAM_KAFKA_SSL_CAFILE)
#   broker-keystore.pem      the broker's unencrypted PKCS#8 key and certificate chain, for
#                            127.0.0.1, localhost and kafka (ssl.keystore.type=PEM)
#   users                    "name password" per line: broker-admin (the broker's own
#                            inter-broker login) first, then the NAME=PASSWORD arguments
#                            (default: journeystream with a random password)
#   NAME.password            each user's password alone (JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE)
# Existing files in DIR are replaced.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 DIR [NAME=PASSWORD ...]" >&2
  exit 2
fi
dir="$1"
shift
users=("$@")
if [ ${#users[@]} -eq 0 ]; then
  users=("journeystream=$(openssl rand -hex 16)")
fi

for entry in "${users[@]}"; do
  name="${entry%%=*}"
  password="${entry#*=}"
  if [ -z "$name" ] || [ "$name" = "$entry" ] || [ -z "$password" ] \
    || printf '%s' "$name$password" | grep -q '[][:space:],=]'; then
    echo "$0: '$entry' is not NAME=PASSWORD (no spaces, commas, '=' or brackets in either)" >&2
    exit 2
  fi
done

mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

quiet() { "$@" > "$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; exit 1; }; }

quiet openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=journeystream dev CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash"
cat > "$work/broker.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:kafka,DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=kafka" -keyout "$work/broker.key" -out "$work/broker.csr"
quiet openssl x509 -req -in "$work/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -CAserial "$work/ca.srl" -CAcreateserial -days 825 -extfile "$work/broker.ext" -out "$work/broker.pem"
cat "$work/broker.key" "$work/broker.pem" "$dir/ca.pem" > "$dir/broker-keystore.pem"

printf 'broker-admin %s\n' "$(openssl rand -hex 16)" > "$dir/users"
for entry in "${users[@]}"; do
  name="${entry%%=*}"
  password="${entry#*=}"
  printf '%s %s\n' "$name" "$password" >> "$dir/users"
  printf '%s' "$password" > "$dir/$name.password"
done

chmod 600 "$dir/ca.key"
# Read inside containers by other users (the Kafka image's, the worker's 10001): development
# files only.
chmod 644 "$dir/ca.pem" "$dir/broker-keystore.pem" "$dir/users" "$dir"/*.password
echo "wrote $dir: ca.pem, broker-keystore.pem, users, $(cd "$dir" && ls -- *.password | tr '\n' ' ')"
