#!/usr/bin/env bash
# The tutorial done by hand, as a line engineer would script it without the station:
# OpenSSH and scp per command, the openssl CLI to sign (openssl req -CA, as in the tutorial).
# Prints "STEP <name> <seconds>" for each step so the benchmark can compare step by step.
#
# usage: tutorial.sh HOST PORT IDENTITY CA_DIR SERIAL WORKDIR   (CA passphrase in STATION_CA_PASSPHRASE)
set -euo pipefail
host=$1 port=$2 identity=$3 ca_dir=$4 serial=$5 work=$6
mkdir -p "$work"
opts=(-i "$identity" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no -o "UserKnownHostsFile=$work/known_hosts"
      -o ConnectTimeout=5 -o LogLevel=ERROR)
dut() { ssh "${opts[@]}" "root@$host" "$@"; }
quiet() { "$@" >/dev/null; }
now_us() { local ns; ns=$(date +%s%N); echo $((ns / 1000)); }
step() {
  local name=$1; shift; local t0 dt; t0=$(now_us); "$@"; dt=$(( $(now_us) - t0 ))
  printf 'STEP %s %d.%06d\n' "$name" $((dt / 1000000)) $((dt % 1000000))
}

wait_back() {
  sleep 0.2
  for _ in $(seq 1 300); do dut true 2>/dev/null && return 0; sleep 0.2; done
  echo "device did not come back" >&2; return 1
}
reboot_and_wait() { dut reboot || true; wait_back; }
sign() {
  dut cat /tmp/key0.csr | openssl req -CA "$ca_dir/ca.cert" -CAkey "$ca_dir/ca.key" -passin env:STATION_CA_PASSPHRASE \
      -in /dev/stdin -out "$work/key0.cert" -days 3650 2>/dev/null
}
push() { scp -q -i "$identity" -P "$port" -o BatchMode=yes -o StrictHostKeyChecking=no -o "UserKnownHostsFile=$work/known_hosts" \
      "$work/key0.cert" "$ca_dir/ca.cert" "root@$host:/var/lib/"; }
tls() {
  local tls_port=$((port + 2000))
  openssl s_server -accept "127.0.0.1:$tls_port" -key "$ca_dir/system.key" -cert "$ca_dir/system.cert" \
      -pass env:STATION_CA_PASSPHRASE -verifyCAfile "$ca_dir/ca.cert" -Verify 1 -naccept 1 \
      < <(sleep 30 2>/dev/null) > "$work/s_server.log" 2>&1 &
  local server=$!
  sleep 0.3
  dut "PKCS11_MODULE_PATH=/usr/lib/libckteec.so.0 openssl s_client -connect 127.0.0.1:$tls_port \
      -engine pkcs11 -keyform engine -key 'pkcs11:object=key0;pin-value=0000' -CAfile /var/lib/ca.cert \
      -cert /var/lib/key0.cert -verify_return_error </dev/null" > "$work/s_client.log" 2>&1
  wait "$server" || true
  grep -q "serial:$serial" "$work/s_server.log"
}

step wipe dut 'find /var/lib/tee -mindepth 1 -exec rm {} \; 2>/dev/null; true'
step reboot reboot_and_wait
step init_token quiet dut pkcs11-tool --module /usr/lib/libckteec.so.0 --init-token --label token0 --so-pin 00000000
step init_pin quiet dut pkcs11-tool --module /usr/lib/libckteec.so.0 --init-pin --label token0 --login --so-pin 00000000 --pin 0000
step keygen quiet dut pkcs11-tool --module /usr/lib/libckteec.so.0 --keypairgen --label key0 --key-type rsa:2048 --login --pin 0000
step csr quiet dut "PKCS11_MODULE_PATH=/usr/lib/libckteec.so.0 openssl req -new -batch -engine pkcs11 -keyform engine \
    -key 'pkcs11:object=key0;pin-value=0000' -subj '/CN=serial:$serial/' -out /tmp/key0.csr"
step sign sign
step push push
step tls_proof tls
