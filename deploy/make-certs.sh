#!/usr/bin/env bash
# Make the credentials of a deployment: a local CA, the SuperLink's TLS certificate (signed by that
# CA, valid for 127.0.0.1 + localhost + every --host given: the name or address institutions use for
# the Fleet proxy, which presents the same certificate) and one SuperNode authentication key pair
# (ECDSA P-384, OpenSSH format, what `flwr supernode register` expects) per institution.
#
#   deploy/make-certs.sh [--out DIR] [--host NAME_OR_IP]... [INSTITUTION...]     (default: s1 s2)
#
# Files in DIR (default $UML_FED_CERTS, else deploy/certs -- the folder the other deploy/*.sh read):
#   ca.crt                      -> every SuperNode machine and the machine that runs `flwr run`
#   ca.key                      -> keep offline (only needed to sign a new server certificate)
#   server.pem, server.key      -> the SuperLink machine only (SuperLink and Fleet proxy)
#   supernode-<inst>, .pub      -> private key: that institution's machine only; .pub: the SuperLink
#                                  operator (`flwr supernode register`)
# Existing files are kept (re-run with --force to replace them).
set -euo pipefail

out="${UML_FED_CERTS:-$(cd "$(dirname "$0")" && pwd)/certs}"
hosts=()
insts=()
force=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --host) hosts+=("$2"); shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "make-certs.sh: unknown option $1" >&2; exit 2 ;;
    *) insts+=("$1"); shift ;;
  esac
done
[[ ${#insts[@]} -gt 0 ]] || insts=(s1 s2)
mkdir -p "$out"
out="$(cd "$out" && pwd)"
umask 077

san="IP:127.0.0.1,DNS:localhost,DNS:superlink,DNS:fleet-proxy"  # service names in docker/compose.yaml
for h in ${hosts[@]+"${hosts[@]}"}; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+=",IP:$h"; else san+=",DNS:$h"; fi
done

if [[ $force == 1 || ! -f "$out/ca.crt" ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
    -keyout "$out/ca.key" -out "$out/ca.crt" -subj "/CN=uml-fed deployment CA" 2>/dev/null
  new_ca=1  # a new CA needs a new server certificate
fi
if [[ $force == 1 || ${new_ca:-0} == 1 || ! -f "$out/server.pem" ]]; then
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$out/server.key" -out "$out/server.csr" \
    -subj "/CN=uml-fed superlink" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$san" > "$out/server.ext"
  openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$out/server.ext" -out "$out/server.pem" 2>/dev/null
  rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"
fi

for inst in "${insts[@]}"; do
  key="$out/supernode-$inst"
  if [[ $force == 1 || ! -f "$key" ]]; then
    rm -f "$key" "$key.pub"
    if command -v ssh-keygen >/dev/null; then
      ssh-keygen -q -t ecdsa -b 384 -N "" -C "" -f "$key"
    else
      python - "$key" <<'PY'
import sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ec
k = ec.generate_private_key(ec.SECP384R1())
open(sys.argv[1], "wb").write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption()))
open(sys.argv[1] + ".pub", "wb").write(k.public_key().public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH))
PY
    fi
  fi
done
# Public parts readable (containers run as another user); private keys stay 0600.
chmod 644 "$out/ca.crt" "$out/server.pem" "$out"/supernode-*.pub
echo "credentials in $out (SuperLink certificate valid for $san; institutions: ${insts[*]})"
