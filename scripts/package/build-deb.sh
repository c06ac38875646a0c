#!/usr/bin/env bash
# Builds the ctsync Debian package: release binaries with the Swift runtime linked in
# (`--static-swift-stdlib`: only glibc, libmnl and libnetfilter_conntrack stay shared), the
# systemd unit, the configuration, manuals, completions, logrotate, keepalived's notify script
# and the examples. docs/operations.md ("Installing the package") says what goes where and why.
#
#   scripts/package/build-deb.sh [OUTDIR]        (default .build-deb; prints the .deb's path)
#
# Needs the toolchain (swiftc on PATH or /opt/swift/usr/bin), dpkg-deb and gzip.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d /opt/swift/usr/bin ] && export PATH="/opt/swift/usr/bin:$PATH"
out=${1:-.build-deb}
version=$(sed -n 's/.*static let string = "\(.*\)".*/\1/p' Sources/ControlProtocol/Version.swift)
[ -n "$version" ] || { echo "build-deb: no version in Sources/ControlProtocol/Version.swift" >&2; exit 1; }
arch=$(dpkg --print-architecture)

echo "build-deb: building release binaries (static Swift runtime)" >&2
# A separate build directory: the static and the ordinary release builds do not overwrite
# each other's objects.
# Foundation's C++ parts would load libstdc++ and libgcc_s: linked in too. The Swift runtime's
# link line asks for -lstdc++ by name, so a folder that holds only GCC's static libstdc++.a is
# searched first, and clang links libgcc statically (-static-libgcc).
libstdcxx=$(g++ -print-file-name=libstdc++.a)
[ -f "$libstdcxx" ] || { echo "build-deb: no static libstdc++ (install libstdc++-12-dev)" >&2; exit 1; }
static_libs=$(pwd)/.build/static-libs
mkdir -p "$static_libs"
ln -sf "$libstdcxx" "$static_libs/libstdc++.a"
flags=(-c release --static-swift-stdlib --scratch-path .build/static -Xlinker -L"$static_libs"
    -Xswiftc -Xclang-linker -Xswiftc -static-libgcc)
swift build "${flags[@]}" --product ctsyncd >&2
swift build "${flags[@]}" --product ctsync >&2
bin=$(swift build "${flags[@]}" --show-bin-path)

# What the binaries load besides glibc's own libraries must be what Depends names.
for b in ctsyncd ctsync; do
    extra=$(ldd "$bin/$b" | awk '{print $1}' | grep -vE '^(linux-vdso\.|/lib64/ld-linux|lib(c|m|pthread|dl|rt|util|resolv)\.so)' \
        | grep -vE '^(libmnl|libnetfilter_conntrack|libnfnetlink)\.so' || true)
    [ -z "$extra" ] || { echo "build-deb: $b loads libraries the package does not depend on: $extra" >&2; exit 1; }
done

root=$out/root
rm -rf "$root"
mkdir -p "$root/DEBIAN"
install -D -m 0755 "$bin/ctsyncd" "$root/usr/sbin/ctsyncd"
install -D -m 0755 "$bin/ctsync" "$root/usr/sbin/ctsync"
strip --strip-unneeded "$root/usr/sbin/ctsyncd" "$root/usr/sbin/ctsync"
install -D -m 0644 packaging/ctsyncd.service "$root/lib/systemd/system/ctsyncd.service"
install -D -m 0644 packaging/ctsyncd.conf "$root/etc/ctsyncd/ctsyncd.conf"
install -D -m 0755 scripts/primary-backup.sh "$root/etc/ctsyncd/primary-backup.sh"
install -D -m 0644 packaging/ctsyncd.logrotate "$root/etc/logrotate.d/ctsyncd"
for page in docs/man/*.[58]; do
    name=$(basename "$page")
    install -D -m 0644 "$page" "$root/usr/share/man/man${name##*.}/$name"
    gzip -9n "$root/usr/share/man/man${name##*.}/$name"
done
"$bin/ctsync" --generate-completion-script bash > "$out/ctsync.bash"
"$bin/ctsync" --generate-completion-script zsh > "$out/_ctsync"
"$bin/ctsync" --generate-completion-script fish > "$out/ctsync.fish"
install -D -m 0644 "$out/ctsync.bash" "$root/usr/share/bash-completion/completions/ctsync"
install -D -m 0644 "$out/_ctsync" "$root/usr/share/zsh/vendor-completions/_ctsync"
install -D -m 0644 "$out/ctsync.fish" "$root/usr/share/fish/vendor_completions.d/ctsync.fish"
docs=$root/usr/share/doc/ctsync
install -D -m 0644 README.md "$docs/README.md"
for doc in docs/*.md; do install -D -m 0644 "$doc" "$docs/$(basename "$doc")"; done
for conf in conf/*.conf conf/README.md; do install -D -m 0644 "$conf" "$docs/examples/$(basename "$conf")"; done
install -D -m 0644 conf/keepalived/keepalived.conf "$docs/examples/keepalived/keepalived.conf"
install -D -m 0644 packaging/copyright "$docs/copyright"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" packaging/debian/control > "$root/DEBIAN/control"
for script in postinst prerm postrm; do install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"; done
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"

deb=$out/ctsync_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
