#!/usr/bin/env bash
# Builds the Debian package: release binary, generated assets (man pages, completions, the
# packaged config) under target/deb-assets/, then `cargo deb --no-build`. Prints the .deb path
# on the last line of stdout. Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
assets=target/deb-assets

cargo build --release --locked -p felhom-agent >&2
bin="$target/release/felhom-agent"

rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" generate man --out "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
for sh in bash zsh fish; do
  "$bin" generate completions "$sh" --out "$assets/completions" >/dev/null
done

# The packaged config is the example with token-secret-file commented out: the unit passes the
# secret as the systemd credential pve-token (LoadCredential=pve-token:/etc/felhom-agent/token),
# and the service user cannot read the root-owned token file itself.
sed -e 's|^token-secret-file = "/etc/felhom-agent/token"$|#token-secret-file = "/etc/felhom-agent/token"|' \
  config.example.toml > "$assets/config.toml"
grep -q '^#token-secret-file = ' "$assets/config.toml" || {
  echo "build-deb: config.example.toml no longer has the token-secret-file line this script edits" >&2
  exit 1
}

out="$target/debian"
mkdir -p "$out"
cargo deb --no-build --no-strip -p felhom-agent --output "$out" >&2
deb=$(ls -t "$out"/felhom-agent_*.deb | head -n1)
echo "$deb"
