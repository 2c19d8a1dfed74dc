#!/usr/bin/env bash
# Fetch mmsearch's public training / evaluation data into data/cache/ (git-ignored) and
# write the JSONL manifests to data/manifests/ (git-ignored). See data/README.md.
#
#   scripts/fetch_data.sh [--only SET]... [--force]
#   (SET: openclipart, emoji, fashion_mnist, tuxpaint, openmoji, icons, emoji_styles)
#
# Sources (nothing is installed system-wide):
#   Debian:  openclipart-png, openclipart-svg, dataset-fashion-mnist,
#            tuxpaint-stamps-default                                   (apt-get download + dpkg -x)
#   npm:     emoji-datasource-google@16.0.0, emoji-datasource-twitter@16.0.0,
#            emojibase-data@17.0.0, emojilib@4.0.3, openmoji@17.0.0,
#            @iconify-json/{game-icons,icon-park,mdi,fa6-solid,tabler,lucide,lucide-lab,
#            streamline-color,emojione,fxemoji,streamline-emojis,noto-v1}
#            (versions below)                                          (npm pack + tar xzf)
#   SVGs are rendered to PNG with librsvg: in process through Debian's gir1.2-rsvg-2.0 and
#   python3-gi-cairo where installed (scripts/setup.sh), else with rsvg-convert (librsvg2-bin).
#
# Idempotent: each package is unpacked into a temp folder, renamed into place and only then
# marked complete (data/cache/<name>/.complete); a complete package is never downloaded
# again. Manifests are written through a temp file + rename by scripts/prepare_data.py.
#
# Environment: PYTHON (default /usr/bin/python3), MMSEARCH_DATA_CACHE and
# MMSEARCH_MANIFESTS (default data/cache and data/manifests under the repository).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${MMSEARCH_DATA_CACHE:-$REPO_ROOT/data/cache}"
MANIFESTS="${MMSEARCH_MANIFESTS:-$REPO_ROOT/data/manifests}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi

# npm packages, pinned.
EMOJI_GOOGLE_VERSION=16.0.0
EMOJI_TWITTER_VERSION=16.0.0
EMOJIBASE_VERSION=17.0.0
EMOJILIB_VERSION=4.0.3
OPENMOJI_VERSION=17.0.0
# @iconify-json/<set>@<version>, in this order (keep in step with ICON_SETS in
# scripts/data_prep/icons.py).
ICON_SETS=(game-icons@1.2.4 icon-park@1.2.4 mdi@1.2.3 fa6-solid@1.2.4 tabler@1.2.41
           lucide@1.2.137 lucide-lab@1.2.3 streamline-color@1.2.2)
# Emoji styles matched to the emoji set by name (EMOJI_STYLE_SETS in data_prep/emoji_styles.py).
EMOJI_STYLE_SETS=(emojione@1.2.3 fxemoji@1.2.2 streamline-emojis@1.2.4 noto-v1@1.2.5)

SETS=(openclipart emoji fashion_mnist tuxpaint openmoji icons emoji_styles)

log() { printf '[fetch_data] %s\n' "$*" >&2; }
die() { printf '[fetch_data] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

ONLY=()
FORCE=()
while [ $# -gt 0 ]; do
    case "$1" in
        --only)
            [ $# -ge 2 ] || die "--only needs a value: one of ${SETS[*]}"
            case " ${SETS[*]} " in
                *" $2 "*) ONLY+=("$2") ;;
                *) die "unknown data set '$2' (expected one of: ${SETS[*]})" ;;
            esac
            shift 2 ;;
        --only=*)
            set -- --only "${1#--only=}" "${@:2}" ;;
        --force)
            FORCE=(--force); shift ;;  # rebuild the manifests (downloads stay cached)
        -h|--help)
            usage; exit 0 ;;
        *)
            die "unknown option '$1' (see --help)" ;;
    esac
done

wanted() {  # wanted SET: true if SET is selected (all are by default)
    [ ${#ONLY[@]} -eq 0 ] && return 0
    local s
    for s in "${ONLY[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found: $2"; }
[ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null 2>&1 \
    || die "Python not found at $PYTHON (set PYTHON=/path/to/python3)"

mkdir -p "$CACHE" "$MANIFESTS"
DOWNLOADS="$CACHE/downloads"
# One run at a time; then temp folders left by an interrupted run can go. Half-unpacked
# packages never count: they live in temp folders until complete.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.lock"
    flock -n 9 || die "another fetch_data.sh is running on $CACHE"
fi
rm -rf "$CACHE"/.*.unpack.*
trap 'rm -rf "$CACHE"/.*.unpack.$$' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
START=$SECONDS

is_complete() {  # is_complete NAME VERSION: the unpacked package is there and whole
    [ -f "$CACHE/$1/.complete" ] && grep -qxF "version=$2" "$CACHE/$1/.complete"
}

mark_complete() {  # mark_complete NAME VERSION SOURCE_FILE
    local tmp="$CACHE/$1/.complete.tmp.$$"
    {
        echo "name=$1"
        echo "version=$2"
        echo "source=$(basename "$3")"
        echo "sha256=$(sha256sum "$3" | cut -d' ' -f1)"
        echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$tmp"
    mv -f "$tmp" "$CACHE/$1/.complete"
}

install_tree() {  # install_tree NAME UNPACKED_TMP_DIR: replace data/cache/NAME atomically-ish
    rm -rf "$CACHE/$1.old"
    [ -e "$CACHE/$1" ] && mv "$CACHE/$1" "$CACHE/$1.old"
    mv "$2" "$CACHE/$1"
    rm -rf "$CACHE/$1.old"
}

APT_UPDATED=0
apt_download() {  # apt_download PACKAGE: into $DOWNLOADS (root's "unsandboxed" warning hidden)
    (cd "$DOWNLOADS" && apt-get download "$1") 2>&1 \
        | { grep -v '^W: Download is performed unsandboxed' || true; } >&2
    return "${PIPESTATUS[0]}"
}

deb_version() {  # candidate version of a Debian package, from the local apt lists
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'
}

fetch_deb() {  # fetch_deb PACKAGE [PRUNE_GLOB...]: download + unpack into data/cache/PACKAGE,
               # deleting the files whose names match a PRUNE_GLOB (e.g. sounds) before install
    local pkg=$1 version deb tmp f glob
    shift
    if [ -f "$CACHE/$pkg/.complete" ]; then
        log "$pkg: cached ($(sed -n 's/^version=//p' "$CACHE/$pkg/.complete"))"
        return 0
    fi
    need apt-get "fetching Debian packages needs apt (Debian/Ubuntu)"
    need dpkg "unpacking Debian packages needs dpkg"
    version=$(deb_version "$pkg")
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        update_apt_lists "$pkg"
        version=$(deb_version "$pkg")
        if [ -z "$version" ] || [ "$version" = "(none)" ]; then
            die "$pkg: no such package in the apt lists (is Debian's 'main' component enabled?)"
        fi
    fi
    mkdir -p "$DOWNLOADS"
    log "$pkg: downloading $version"
    rm -f "$DOWNLOADS/${pkg}_"*.deb
    if ! apt_download "$pkg"; then
        update_apt_lists "$pkg"
        apt_download "$pkg" || die "$pkg: 'apt-get download $pkg' failed (network? apt sources?)"
    fi
    deb=""
    for f in "$DOWNLOADS/${pkg}_"*.deb; do [ -f "$f" ] && deb=$f; done
    [ -n "$deb" ] || die "$pkg: apt-get download left no .deb file in $DOWNLOADS"
    tmp="$CACHE/.$pkg.unpack.$$"
    rm -rf "$tmp"
    log "$pkg: unpacking $(basename "$deb") ($(du -h "$deb" | cut -f1))"
    dpkg -x "$deb" "$tmp" || { rm -rf "$tmp"; die "$pkg: 'dpkg -x $(basename "$deb")' failed"; }
    for glob in "$@"; do find "$tmp" -name "$glob" -type f -delete; done
    install_tree "$pkg" "$tmp"
    mark_complete "$pkg" "$version" "$deb"
    rm -f "$deb"
}

update_apt_lists() {  # once per run, when a package is unknown or its download fails
    [ "$APT_UPDATED" = 1 ] && return 0
    APT_UPDATED=1
    log "$1: not available from the current apt lists; running 'apt-get update' once"
    if [ "$(id -u)" -ne 0 ]; then
        die "$1: apt lists look stale and 'apt-get update' needs root: run 'sudo apt-get update' and retry"
    fi
    apt-get update -qq || die "'apt-get update' failed"
}

fetch_npm() {  # fetch_npm NAME VERSION KEEP...: npm pack + unpack into data/cache/DIR/package,
               # keeping only the listed paths of the package (relative to package/; a path
               # written ?path is kept if the package has it). DIR is NAME, a scoped name
               # @scope/pkg becoming scope-pkg (@iconify-json/mdi -> iconify-json-mdi).
    local name=$1 version=$2 tgz tmp keep unpacked dir optional
    shift 2
    dir=${name#@}
    dir=${dir//\//-}
    if is_complete "$dir" "$version"; then
        log "$name: cached ($version)"
        return 0
    fi
    need npm "fetching the emoji data needs npm (Debian: apt-get install npm)"
    need tar "unpacking npm packages needs tar"
    mkdir -p "$DOWNLOADS"
    log "$name: downloading $name@$version"
    rm -f "$DOWNLOADS/$dir-"*.tgz
    tgz=$(cd "$DOWNLOADS" && npm pack --silent --cache "$DOWNLOADS/npm-cache" "$name@$version" | tail -n1) \
        || die "$name: 'npm pack $name@$version' failed (network? does the version exist? try: npm view $name@$version version)"
    if [ -z "$tgz" ] || [ ! -f "$DOWNLOADS/$tgz" ]; then
        die "$name: npm pack left no tarball in $DOWNLOADS"
    fi
    tmp="$CACHE/.$dir.unpack.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp/unpacked"
    log "$name: unpacking $tgz ($(du -h "$DOWNLOADS/$tgz" | cut -f1))"
    tar xzf "$DOWNLOADS/$tgz" -C "$tmp/unpacked" --no-same-owner \
        || { rm -rf "$tmp"; die "$name: 'tar xzf $tgz' failed"; }
    unpacked="$tmp/unpacked/package"
    grep -q "\"version\": *\"$version\"" "$unpacked/package.json" \
        || { rm -rf "$tmp"; die "$name: the tarball is not version $version"; }
    # Keep what prepare_data.py reads plus the license files (saves ~200 MB of sheets,
    # other image sizes and other locales).
    mkdir -p "$tmp/final/package"
    for keep in package.json "$@"; do
        optional=0
        case "$keep" in \?*) optional=1; keep=${keep#\?} ;; esac
        if [ ! -e "$unpacked/$keep" ]; then
            [ "$optional" = 1 ] && continue
            rm -rf "$tmp"; die "$name: '$keep' missing from $tgz"
        fi
        mkdir -p "$tmp/final/package/$(dirname "$keep")"
        mv "$unpacked/$keep" "$tmp/final/package/$keep"
    done
    for keep in "$unpacked"/LICENSE* "$unpacked"/LICENCE* "$unpacked"/README.md; do
        if [ -f "$keep" ]; then mv "$keep" "$tmp/final/package/"; fi
    done
    install_tree "$dir" "$tmp/final"
    rm -rf "$tmp"
    mark_complete "$dir" "$version" "$DOWNLOADS/$tgz"
    rm -f "$DOWNLOADS/$tgz"
}

if wanted openclipart; then
    fetch_deb openclipart-png
    fetch_deb openclipart-svg
fi
if wanted fashion_mnist; then
    fetch_deb dataset-fashion-mnist
fi
if wanted tuxpaint; then
    need rsvg-convert "rendering the SVG stamps needs librsvg2-bin (apt-get install librsvg2-bin)"
    fetch_deb tuxpaint-stamps-default '*.ogg' '*.wav'   # the stamps' sounds are not used
fi
if wanted emoji; then
    fetch_npm emoji-datasource-google "$EMOJI_GOOGLE_VERSION" emoji.json img/google/64
    fetch_npm emoji-datasource-twitter "$EMOJI_TWITTER_VERSION" emoji.json img/twitter/64
    fetch_npm emojibase-data "$EMOJIBASE_VERSION" en/data.json
    fetch_npm emojilib "$EMOJILIB_VERSION" dist/emoji-en-US.json
fi
if wanted openmoji || wanted emoji_styles; then
    # both take the emoji set's groups (same concept, same split): they read its data too
    fetch_npm emoji-datasource-google "$EMOJI_GOOGLE_VERSION" emoji.json img/google/64
    fetch_npm emoji-datasource-twitter "$EMOJI_TWITTER_VERSION" emoji.json img/twitter/64
    fetch_npm emojibase-data "$EMOJIBASE_VERSION" en/data.json
    fetch_npm emojilib "$EMOJILIB_VERSION" dist/emoji-en-US.json
fi
if wanted openmoji; then
    need rsvg-convert "rendering OpenMoji's SVGs needs librsvg2-bin (apt-get install librsvg2-bin)"
    fetch_npm openmoji "$OPENMOJI_VERSION" data/openmoji.json color/svg black/svg
fi
if wanted icons; then
    need rsvg-convert "rendering the icons needs librsvg2-bin (apt-get install librsvg2-bin)"
    for spec in "${ICON_SETS[@]}"; do
        fetch_npm "@iconify-json/${spec%@*}" "${spec##*@}" icons.json info.json ?metadata.json
    done
fi
if wanted emoji_styles; then
    need rsvg-convert "rendering the emoji icons needs librsvg2-bin (apt-get install librsvg2-bin)"
    for spec in "${EMOJI_STYLE_SETS[@]}"; do
        fetch_npm "@iconify-json/${spec%@*}" "${spec##*@}" icons.json info.json ?metadata.json
    done
fi
rm -rf "$DOWNLOADS/npm-cache"
rmdir "$DOWNLOADS" 2>/dev/null || true
log "downloads done ($((SECONDS - START)) s); building manifests"

PREP_ARGS=(--cache "$CACHE" --out "$MANIFESTS")
for s in ${ONLY[@]+"${ONLY[@]}"}; do PREP_ARGS+=(--only "$s"); done
"$PYTHON" "$REPO_ROOT/scripts/prepare_data.py" "${PREP_ARGS[@]}" ${FORCE[@]+"${FORCE[@]}"} \
    || die "building the manifests failed (scripts/prepare_data.py)"
log "done in $((SECONDS - START)) s; cache: $(du -sh "$CACHE" 2>/dev/null | cut -f1), manifests in $MANIFESTS"
