#!/bin/sh
# Install the station's bundle (the folder this script is in, made by `make dist`) on a line PC. Run as root:
#
#   ./install.sh [--apt] [--kiosk] [--service] [--prefix DIR]
#
#   (always)  the bundle to PREFIX (default /opt/welma-station), `station` and `station-gui` on the PATH
#             (/usr/local/bin), the desktop entry and its icon
#   --apt     also the system packages a line PC needs (the runtime section of share/apt-packages.txt)
#   --kiosk   also start the station full screen at every desktop login (/etc/xdg/autostart)
#   --service also the station service: the welma-station account owning /var/lib/welma-station (0700),
#             the groups welma-tech, welma-quality, welma-admin, the systemd unit welma-station.service
#             (enabled; start it, then create the CA through it: see README, "the station service")
#
# DESTDIR=/some/dir stages the same files below that directory instead (packaging tests, package builds).
# Installing again replaces the previous version; the station homes (CA, audit log) are never touched.
set -eu

prefix=/opt/welma-station
apt=no
kiosk=no
service=no
while [ $# -gt 0 ]; do
    case $1 in
        --apt) apt=yes ;;
        --kiosk) kiosk=yes ;;
        --service) service=yes ;;
        --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }; prefix=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $prefix in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path, not $prefix" >&2; exit 2 ;;
esac

bundle=$(cd "$(dirname "$0")" && pwd)
dest=${DESTDIR:-}
if [ ! -x "$bundle/station" ] || [ ! -x "$bundle/station-gui" ] || [ ! -d "$bundle/_internal" ]; then
    echo "install.sh: $bundle is not a station bundle (run it from dist/station/, made by \`make dist\`)" >&2
    exit 1
fi
if [ -z "$dest" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: installing needs root — run it with sudo" >&2
    exit 1
fi

if [ "$apt" = yes ]; then
    packages=$(sed -n '/^# == runtime/,/^# == /p' "$bundle/share/apt-packages.txt" | grep -v '^#')
    echo "Installing system packages:" $packages
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages
fi

# The new version goes next to the old one and replaces it with a rename, so that a station started meanwhile
# finds one complete version or the other.
target="$dest$prefix"
mkdir -p "$(dirname "$target")"
staging="$target.new.$$"
rm -rf "$staging"
cp -a "$bundle" "$staging"
rm -rf "$target.old"
if [ -e "$target" ]; then mv "$target" "$target.old"; fi
mv "$staging" "$target"
rm -rf "$target.old"
echo "installed the station in $prefix"

mkdir -p "$dest/usr/local/bin"
ln -sfn "$prefix/station" "$dest/usr/local/bin/station"
ln -sfn "$prefix/station-gui" "$dest/usr/local/bin/station-gui"

# Desktop entry and icon (freedesktop layout). Exec and TryExec name the installed executable.
applications="$dest/usr/share/applications"
mkdir -p "$applications"
sed -e "s|^Exec=station-gui|Exec=$prefix/station-gui|" -e "s|^TryExec=station-gui|TryExec=$prefix/station-gui|" \
    "$bundle/share/welma-station.desktop" >"$applications/welma-station.desktop"
chmod 644 "$applications/welma-station.desktop"
mkdir -p "$dest/usr/share/icons"
cp -R "$bundle/share/icons/hicolor" "$dest/usr/share/icons/"
if [ -z "$dest" ] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
fi
echo "added the desktop entry \"Welma provisioning station\""

if [ "$kiosk" = yes ]; then
    autostart="$dest/etc/xdg/autostart"
    mkdir -p "$autostart"
    sed -e "s|^Exec=welma-station-kiosk|Exec=$prefix/share/kiosk/welma-station-kiosk|" \
        "$bundle/share/kiosk/welma-station-kiosk.desktop" >"$autostart/welma-station-kiosk.desktop"
    chmod 644 "$autostart/welma-station-kiosk.desktop"
    echo "kiosk: the station opens full screen at every desktop login (remove $autostart/welma-station-kiosk.desktop to stop)"
fi

if [ "$service" = yes ]; then
    units="$dest/etc/systemd/system"
    mkdir -p "$units"
    sed -e "s|/opt/welma-station/|$prefix/|g" "$bundle/share/welma-station.service" >"$units/welma-station.service"
    chmod 644 "$units/welma-station.service"
    if [ -z "$dest" ]; then
        for group in welma-tech welma-quality welma-admin; do
            getent group "$group" >/dev/null || groupadd --system "$group"
        done
        if ! getent passwd welma-station >/dev/null; then
            useradd --system --user-group --home-dir /var/lib/welma-station --no-create-home \
                --shell /usr/sbin/nologin --comment "Welma provisioning station service" welma-station
        fi
        install -d -o welma-station -g welma-station -m 0700 /var/lib/welma-station
        install -d -o root -g root -m 0700 /etc/welma-station
        if command -v systemctl >/dev/null 2>&1; then
            systemctl daemon-reload
            systemctl enable welma-station.service
        fi
    else
        echo "service: DESTDIR set — the account welma-station, the groups welma-tech, welma-quality, welma-admin and /var/lib/welma-station (0700) are made on the line PC itself"
    fi
    echo "service: welma-station.service installed; start it (systemctl start welma-station): its socket is /run/welma-station/station.sock, reachable by every account, each request checked against the caller's groups"
    echo "service: give people their role with usermod -aG welma-tech|welma-quality|welma-admin NAME"
    echo "service: then an administrator (welma-admin or root) creates the CA through the service: station ca init (or a token CA: station ca init --pkcs11-module ... then station ca import-chain); after a restart: station ca unlock"
fi
