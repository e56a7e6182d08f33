#!/usr/bin/env bash
# Usage: scripts/kafka/sasl-ssl.sh DIR
#
# Generates, into DIR, everything a local test broker needs for a TLS + SASL/SCRAM
# (SASL_SSL) listener, and what its clients need to reach it:
#   ca.pem, ca.key              a throw-away CA (clients: ssl.ca.location=DIR/ca.pem)
#   broker.pem, broker.key      the broker certificate (SAN IP:127.0.0.1, DNS:localhost)
#   broker-keystore.pem         PKCS#8 key + certificate chain: the broker's PEM keystore
#   server-extra.properties     for KAFKA_EXTRA_CONFIG of start.sh: keeps the PLAINTEXT
#                               listener (wait-ready.sh, admin) and adds
#                               SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT with SCRAM-SHA-512
#   client.properties           the same credentials for Kafka's Java CLI tools
#                               (topics.sh --command-config DIR/client.properties ...)
#   sasl.env                    shell exports: KAFKA_SASL_BOOTSTRAP, KAFKA_SASL_CA,
#                               KAFKA_SASL_USER, KAFKA_SASL_PASSWORD,
#                               KAFKA_SASL_FORMAT_ARGS (the --add-scram argument)
#
# SCRAM users of a KRaft cluster live in its metadata log, so the user is created when the
# storage is formatted: pass KAFKA_SASL_FORMAT_ARGS as KAFKA_FORMAT_EXTRA_ARGS to start.sh
# on a fresh data dir. (For a broker that is already formatted, add it with
#   topics.sh --tool configs --alter --add-config 'SCRAM-SHA-512=[password=...]' \
#             --entity-type users --entity-name USER
# over the PLAINTEXT listener instead.)
#
# Env:
#   KAFKA_PORT           PLAINTEXT port of the broker (default 9092)
#   KAFKA_SASL_PORT      SASL_SSL port (default KAFKA_PORT + 2; KAFKA_PORT + 1 is the controller)
#   KAFKA_SASL_USER      SCRAM user (default connector)
#   KAFKA_SASL_PASSWORD  its password (default: the one in DIR/sasl.env if there is one,
#                        else a fresh random one; letters and digits only)
#   KAFKA_TLS_DAYS       certificate validity in days (default 30)
#
# Re-running on the same DIR keeps the password, the CA and the certificate (while valid
# for another day), so a broker that is already running stays reachable; delete DIR for
# fresh ones (scripts/test.sh does, on every run).
#
# Everything in DIR is a test secret: the CA key is unencrypted. Do not use it elsewhere.
set -euo pipefail
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[[ $# -eq 1 && "$1" != -* ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
command -v openssl >/dev/null 2>&1 || kafka_die "openssl not found on PATH"

mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
SASL_PORT="${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
SASL_USER="${KAFKA_SASL_USER:-connector}"
DAYS="${KAFKA_TLS_DAYS:-30}"
[[ "$SASL_PORT" =~ ^[0-9]+$ ]] || kafka_die "KAFKA_SASL_PORT must be a port number"
[[ "$SASL_PORT" != "$KAFKA_PORT" && "$SASL_PORT" != "$KAFKA_CONTROLLER_PORT" ]] \
  || kafka_die "KAFKA_SASL_PORT ($SASL_PORT) must differ from KAFKA_PORT and KAFKA_CONTROLLER_PORT"
[[ "$SASL_USER" =~ ^[A-Za-z0-9._-]+$ ]] || kafka_die "KAFKA_SASL_USER: letters, digits, '.', '_' and '-' only"

password="${KAFKA_SASL_PASSWORD:-}"
if [[ -z "$password" && -f "$DIR/sasl.env" ]]; then
  # Keep the password of an earlier run: a formatted broker keeps its SCRAM users.
  password="$(sed -n "s/^export KAFKA_SASL_PASSWORD='\(.*\)'$/\1/p" "$DIR/sasl.env")"
fi
[[ -n "$password" ]] || password="$(openssl rand -hex 16)"
# Plain characters only: the password goes into JAAS config, a SCRAM format argument and
# environment variables without any quoting worries.
[[ "$password" =~ ^[A-Za-z0-9]+$ ]] || kafka_die "KAFKA_SASL_PASSWORD: letters and digits only"

umask 077
work="$(mktemp -d "$DIR/.gen.XXXXXX")"
trap 'rm -rf "$work"' EXIT
ossl() {
  if ! out="$(openssl "$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    kafka_die "openssl $1 failed"
  fi
}

# An earlier run's CA and certificate are kept while they are valid for another day: a
# running broker keeps the keystore it loaded at start. Delete DIR for fresh ones.
if [[ -s "$DIR/ca.pem" && -s "$DIR/ca.key" && -s "$DIR/broker.pem" && -s "$DIR/broker-keystore.pem" ]] \
   && openssl verify -CAfile "$DIR/ca.pem" "$DIR/broker.pem" >/dev/null 2>&1 \
   && openssl x509 -in "$DIR/broker.pem" -noout -checkend 86400 >/dev/null 2>&1; then
  kafka_log "keeping the CA and broker certificate in $DIR"
  for f in ca.key ca.pem broker.key broker.pem broker-keystore.pem; do cp -p "$DIR/$f" "$work/$f"; done
else
  # --- CA --------------------------------------------------------------------------------
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key"
  ossl req -x509 -new -key "$work/ca.key" -sha256 -days "$DAYS" -subj "/CN=campaign-connector test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$work/ca.pem"

  # --- broker certificate, signed by the CA ----------------------------------------------
  # RSA key: works with every TLS 1.2/1.3 cipher suite of the JDK and librdkafka's OpenSSL.
  ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/broker.key"
  ossl req -new -key "$work/broker.key" -subj "/CN=localhost" -out "$work/broker.csr"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid" >"$work/broker.ext"
  ossl x509 -req -in "$work/broker.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -sha256 -days "$DAYS" -extfile "$work/broker.ext" \
    -out "$work/broker.pem"
  ossl verify -CAfile "$work/ca.pem" "$work/broker.pem"

  # Kafka's PEM keystore: an unencrypted PKCS#8 key ("BEGIN PRIVATE KEY", as genpkey
  # writes it) followed by the certificate chain, leaf first. No ssl.key.password then.
  cat "$work/broker.key" "$work/broker.pem" "$work/ca.pem" >"$work/broker-keystore.pem"
fi

# --- broker config (appended to server.properties by start.sh) ---------------------------
# @KAFKA_PORT@ / @KAFKA_CONTROLLER_PORT@ are replaced by start.sh; the SASL_SSL port is
# concrete. Later keys override the generated ones (listeners, advertised.listeners).
cat >"$work/server-extra.properties" <<EOF
# Generated by scripts/kafka/sasl-ssl.sh: a SASL_SSL listener (TLS + SCRAM-SHA-512) next to
# the PLAINTEXT one (readiness checks, admin) and the controller.
listeners=PLAINTEXT://127.0.0.1:@KAFKA_PORT@,CONTROLLER://127.0.0.1:@KAFKA_CONTROLLER_PORT@,SASL_SSL://127.0.0.1:$SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:@KAFKA_PORT@,SASL_SSL://127.0.0.1:$SASL_PORT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
# Broker side of SCRAM needs no credentials of its own (inter-broker traffic is PLAINTEXT);
# users are checked against the SCRAM credentials in the cluster metadata.
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$DIR/broker-keystore.pem
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location=$DIR/ca.pem
listener.name.sasl_ssl.ssl.client.auth=none
listener.name.sasl_ssl.ssl.enabled.protocols=TLSv1.3,TLSv1.2
EOF

# --- clients -----------------------------------------------------------------------------
cat >"$work/client.properties" <<EOF
# Kafka Java clients / CLI tools: --command-config / --consumer.config / --producer.config
bootstrap.servers=127.0.0.1:$SASL_PORT
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SASL_USER" password="$password";
ssl.truststore.type=PEM
ssl.truststore.location=$DIR/ca.pem
EOF
cat >"$work/sasl.env" <<EOF
# Generated by scripts/kafka/sasl-ssl.sh; source it.
export KAFKA_SASL_BOOTSTRAP='127.0.0.1:$SASL_PORT'
export KAFKA_SASL_CA='$DIR/ca.pem'
export KAFKA_SASL_USER='$SASL_USER'
export KAFKA_SASL_PASSWORD='$password'
export KAFKA_SASL_FORMAT_ARGS='--add-scram SCRAM-SHA-512=[name=$SASL_USER,password=$password]'
EOF

chmod 600 "$work"/*
chmod 644 "$work/ca.pem"
for f in ca.key ca.pem broker.key broker.pem broker-keystore.pem server-extra.properties client.properties sasl.env; do
  mv -f "$work/$f" "$DIR/$f"
done
kafka_log "TLS + SCRAM material in $DIR (SASL_SSL on 127.0.0.1:$SASL_PORT, user $SASL_USER)"
