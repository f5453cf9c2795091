#!/bin/sh
# Creates placeholder sources for every build target that Cargo.toml names,
# so `cargo build` can compile the dependencies alone (a cached image layer)
# before the real sources are copied in. Used by the Dockerfile's builder
# stage; POSIX sh + awk only (the rust slim image has dash and mawk).
#
# Usage: stub-targets.sh [Cargo.toml]   (run in the directory of Cargo.toml)
#
# Cargo refuses a manifest whose explicit [[bin]]/[[bench]]/[[test]]/
# [[example]] targets have no source file, so each gets `fn main() {}`;
# src/main.rs and src/lib.rs are always stubbed (an unused auto-discovered
# library costs nothing). Existing files are left alone.
set -eu

manifest=${1:-Cargo.toml}

paths=$(awk '
    function flush() {
        if (kind != "") {
            if (path == "") {
                if (kind == "lib") path = "src/lib.rs"
                else if (kind == "bin" && name != pkg) path = "src/bin/" name ".rs"
                else if (kind == "bench") path = "benches/" name ".rs"
                else if (kind == "test") path = "tests/" name ".rs"
                else if (kind == "example") path = "examples/" name ".rs"
            }
            if (path != "") print path
        }
        kind = ""; name = ""; path = ""
    }
    function value(line) {
        sub(/^[^=]*=[ \t]*["\047]/, "", line)
        sub(/["\047].*$/, "", line)
        return line
    }
    /^[ \t]*\[/ { flush(); section = $0; gsub(/[ \t]/, "", section) }
    section == "[package]" && /^[ \t]*name[ \t]*=/ { pkg = value($0) }
    section == "[lib]" { kind = "lib" }
    section == "[[bin]]" { kind = "bin" }
    section == "[[bench]]" { kind = "bench" }
    section == "[[test]]" { kind = "test" }
    section == "[[example]]" { kind = "example" }
    kind != "" && /^[ \t]*name[ \t]*=/ { name = value($0) }
    kind != "" && /^[ \t]*path[ \t]*=/ { path = value($0) }
    END { flush() }
' "$manifest")

for path in src/main.rs src/lib.rs $paths; do
    if [ ! -e "$path" ]; then
        mkdir -p "$(dirname "$path")"
        case "$path" in
            src/lib.rs) : >"$path" ;;
            *) echo 'fn main() {}' >"$path" ;;
        esac
        echo "stub: $path"
    fi
done
