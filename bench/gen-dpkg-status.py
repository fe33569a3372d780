#!/usr/bin/env python3
"""Generate a synthetic dpkg status file for benchmarks, and optionally an apt list beside it.

The status file has COUNT package stanzas shaped like those of a Debian 12 host, with about the
same fields per stanza, field frequencies and bytes per stanza (about 900) as one such host's
status file: library, -dev,
python3-, perl and font packages, epochs, Debian revisions and security suffixes, multiarch
library pairs (amd64 and i386), held packages, removed packages with configuration files left
behind (config-files), multi-line descriptions and conffiles. Output is deterministic for a given
COUNT and --seed.

Usage:
    gen-dpkg-status.py COUNT > status
    gen-dpkg-status.py COUNT --apt-list lists/x_Packages --updates 100 [--not-installed N] > status

With --apt-list, the list contains every installed amd64 and all package at its installed version,
except that --updates of them have a higher version, followed by N stanzas of packages that are
not installed. A Debian 12 mirror's main list for amd64 contains about 63,000 packages.
"""

import argparse
import random
import re
import sys

STEMS = [
    "acl", "apparmor", "apt", "attr", "audit", "base-files", "bash", "bind9", "binutils", "brotli",
    "bsdutils", "bzip2", "ca-certificates", "cairo", "cap-ng", "coreutils", "cron", "curl",
    "cyrus-sasl2", "dbus", "debconf", "debianutils", "diffutils", "dpkg", "e2fsprogs", "elfutils",
    "expat", "ffi", "file", "findutils", "fontconfig", "freetype", "fribidi", "gcc-12", "gdbm",
    "glib2.0", "glibc", "gmp", "gnupg2", "gnutls28", "gpgme1.0", "graphite2", "grep", "gzip",
    "harfbuzz", "hostname", "icu", "idn2", "init-system-helpers", "iproute2", "iptables",
    "iputils", "jansson", "jbigkit", "jq", "json-c", "keyutils", "kmod", "krb5", "lcms2",
    "ldap", "less", "libbsd", "libcap2", "libedit", "libgcrypt20", "libgpg-error", "libidn2",
    "libjpeg-turbo", "libpng1.6", "libpsl", "libseccomp", "libselinux", "libsemanage",
    "libsepol", "libssh2", "libtasn1-6", "libtirpc", "libunistring", "libxcrypt", "libxml2",
    "libxslt", "libyaml", "libzstd", "logrotate", "lsb", "lz4", "mawk", "mpfr4", "ncurses",
    "netbase", "nettle", "nghttp2", "nspr", "nss", "numactl", "openldap", "openssh", "openssl",
    "p11-kit", "pam", "pango1.0", "pcre2", "perl", "pixman", "popt", "procps", "psmisc",
    "python3.11", "readline", "rsync", "rtmpdump", "sed", "sensible-utils", "shadow",
    "sqlite3", "sudo", "systemd", "sysvinit", "tar", "tcl8.6", "tiff", "tk8.6", "tzdata",
    "ucf", "util-linux", "vim", "wget", "x11", "xau", "xcb", "xdmcp", "xext", "xft", "xrender",
    "xz-utils", "zlib",
]
PYTHON_MODULES = [
    "apt", "attr", "certifi", "chardet", "cryptography", "dbus", "debian", "distro", "gi",
    "idna", "jinja2", "markupsafe", "netifaces", "pkg-resources", "requests", "setuptools",
    "six", "urllib3", "yaml", "wheel", "pexpect", "ptyprocess", "serial", "psutil", "lxml",
]
PERL_MODULES = [
    "libtext-iconv", "libtext-charwidth", "libtext-wrapi18n", "liblocale-gettext", "libtimedate",
    "liburi", "libhttp-message", "libwww", "libio-socket-ssl", "libnet-ssleay", "libjson",
    "libfile-listing", "libhtml-parser", "libhtml-tagset", "libdigest-hmac", "liberror",
]
FONTS = ["dejavu-core", "liberation", "noto-core", "droid-fallback", "urw-base35", "freefont"]
SUFFIXES = ["", "", "", "-common", "-data", "-bin", "-utils", "-doc", "-dev"]
SECTIONS = ["libs", "utils", "admin", "net", "devel", "python", "perl", "fonts", "text", "misc"]
PRIORITIES = ["optional", "optional", "optional", "important", "required", "standard"]
MAINTAINERS = [
    "Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>",
    "Debian Python Team <team+python@tracker.debian.org>",
    "Debian Perl Group <pkg-perl-maintainers@lists.alioth.debian.org>",
    "Debian Fonts Task Force <debian-fonts@lists.debian.org>",
    "Debian systemd Maintainers <pkg-systemd-maintainers@lists.alioth.debian.org>",
    "GNU Libc Maintainers <debian-glibc@lists.debian.org>",
    "Debian GCC Maintainers <debian-gcc@lists.debian.org>",
    "Debian X Strike Force <debian-x@lists.debian.org>",
    "Laurent Bigonville <bigon@debian.org>",
    "Guillem Jover <guillem@debian.org>",
]
WORDS = (
    "library shared runtime support files for the development of programs that use this "
    "package contains utilities providing access to data format network protocol secure "
    "implementation of the standard with extensions used by many applications and tools "
    "includes headers static documentation examples configuration common architecture "
    "independent system daemon client server command line interface"
).split()


def version(rng):
    """Return a Debian version string in one of the shapes seen on Debian 12 hosts."""
    upstream = ".".join(str(rng.randint(0, 30)) for _ in range(rng.choice([2, 2, 3, 3, 4])))
    shape = rng.random()
    if shape < 0.08:
        upstream = f"{rng.randint(2015, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    elif shape < 0.15:
        upstream += f"+dfsg{rng.choice(['', '1'])}"
    elif shape < 0.18:
        upstream += f"~rc{rng.randint(1, 3)}"
    epoch = f"{rng.randint(1, 3)}:" if rng.random() < 0.1 else ""
    if rng.random() < 0.05:
        return epoch + upstream
    revision = str(rng.randint(1, 12))
    roll = rng.random()
    if roll < 0.2:
        revision += f"+deb12u{rng.randint(1, 9)}"
    elif roll < 0.25:
        revision += f"~deb12u{rng.randint(1, 3)}"
    elif roll < 0.3:
        revision += f"+b{rng.randint(1, 3)}"
    return f"{epoch}{upstream}-{revision}"


def higher_version(installed):
    """Return a version that dpkg orders above `installed`, as a stable or security update would."""
    match = re.search(r"deb12u(\d+)$", installed)
    if match:
        return installed[: match.start(1)] + str(int(match.group(1)) + 1)
    return installed + "+deb12u1"


def package_names(rng):
    """Yield an endless stream of plausible package names. Callers drop duplicates."""
    while True:
        roll = rng.random()
        stem = rng.choice(STEMS)
        if roll < 0.40:
            base = stem if stem.startswith("lib") else "lib" + stem
            soname = rng.choice(["", "1", "2", "3", "6", "0", "-6", "1t64", "4"])
            yield base + soname + rng.choice(["", "", "", "-dev", "-bin", "-common"])
        elif roll < 0.55:
            yield "python3-" + rng.choice(PYTHON_MODULES) + rng.choice(["", "", "-doc"])
        elif roll < 0.62:
            yield rng.choice(PERL_MODULES) + "-perl"
        elif roll < 0.65:
            yield "fonts-" + rng.choice(FONTS)
        elif roll < 0.67:
            yield f"linux-image-6.1.0-{rng.randint(10, 31)}-amd64"
        else:
            yield stem + rng.choice(SUFFIXES)


def sentence(rng, low, high):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def relations(rng, names, low, high):
    picked = rng.sample(names, k=min(len(names), rng.randint(low, high)))
    parts = []
    for name in picked:
        if rng.random() < 0.6:
            parts.append(f"{name} (>= {version(rng)})")
        else:
            parts.append(name)
    return ", ".join(parts)


def generate_rows(count, rng):
    """Return COUNT (name, arch, version, status word triple) rows with unique (name, arch)."""
    rows = []
    seen = set()
    max_attempts = 100 * count
    for attempt, name in enumerate(package_names(rng)):
        if len(rows) >= count:
            break
        if attempt >= max_attempts:
            raise SystemExit(f"error: found only {len(rows)} distinct package names in {max_attempts} "
                             f"attempts; use a count of at most {len(rows)}")
        arch = "all" if name.endswith(("-common", "-data", "-doc")) or name.startswith("fonts-") \
            or name.endswith("-perl") else "amd64"
        if (name, arch) in seen:
            continue
        seen.add((name, arch))
        roll = rng.random()
        if roll < 0.01:
            status = "deinstall ok config-files"
        elif roll < 0.02:
            status = "hold ok installed"
        else:
            status = "install ok installed"
        rows.append((name, arch, version(rng), status))
        # About one library in twelve also has its i386 build installed (a multiarch pair).
        if name.startswith("lib") and arch == "amd64" and rng.random() < 0.08 and len(rows) < count:
            seen.add((name, "i386"))
            rows.append((name, "i386", rows[-1][2], status))
    return rows


def status_stanza(rng, row, all_names):
    name, arch, installed_version, status = row
    fields = [
        ("Package", name),
        ("Status", status),
        ("Priority", rng.choice(PRIORITIES)),
        ("Section", rng.choice(SECTIONS)),
        ("Installed-Size", str(rng.randint(8, 60000))),
        ("Maintainer", rng.choice(MAINTAINERS)),
        ("Architecture", arch),
    ]
    if name.startswith("lib") and arch != "all":
        fields.append(("Multi-Arch", "same"))
    elif rng.random() < 0.75:
        fields.append(("Multi-Arch", "foreign"))
    if rng.random() < 0.8:
        fields.append(("Source", re.sub(r"(-dev|-bin|-common|-data|-doc|-utils)$", "", name)))
    fields.append(("Version", installed_version))

    if rng.random() < 0.28:
        fields.append(("Replaces", relations(rng, all_names, 1, 2)))
    if rng.random() < 0.14:
        fields.append(("Provides", rng.choice(all_names) + "-abi"))
    if rng.random() < 0.05:
        fields.append(("Pre-Depends", relations(rng, all_names, 1, 2)))
    fields.append(("Depends", relations(rng, all_names, 1, 6)))
    if rng.random() < 0.13:
        fields.append(("Recommends", relations(rng, all_names, 1, 3)))
    if rng.random() < 0.23:
        fields.append(("Suggests", relations(rng, all_names, 1, 3)))
    if rng.random() < 0.27:
        fields.append(("Breaks", relations(rng, all_names, 1, 2)))
    if rng.random() < 0.11:
        fields.append(("Conflicts", relations(rng, all_names, 1, 2)))

    lines = [f"{key}: {value}" for key, value in fields]
    if rng.random() < 0.1:
        lines.append("Conffiles:")
        for index in range(rng.randint(1, 4)):
            digest = "%032x" % rng.getrandbits(128)
            lines.append(f" /etc/{name}/{name}-{index}.conf {digest}")

    lines.append(f"Description: {sentence(rng, 3, 8)}")
    for paragraph in range(rng.randint(1, 3)):
        if paragraph:
            lines.append(" .")
        for _ in range(rng.randint(1, 4)):
            lines.append(" " + sentence(rng, 8, 12))
    if rng.random() < 0.86:
        lines.append(f"Homepage: https://www.example.org/{name}")
    return "\n".join(lines) + "\n"


def list_stanza(rng, name, arch, list_version, all_names):
    """Return one stanza of an apt Packages list, with the field frequencies of Debian 12 main."""
    fields = [("Package", name)]
    if rng.random() < 0.72:
        fields.append(("Source", re.sub(r"(-dev|-bin|-common|-data|-doc|-utils)$", "", name)))
    fields += [
        ("Version", list_version),
        ("Installed-Size", str(rng.randint(8, 60000))),
        ("Maintainer", rng.choice(MAINTAINERS)),
        ("Architecture", arch),
    ]
    if rng.random() < 0.36:
        fields.append(("Multi-Arch", rng.choice(["same", "foreign", "allowed"])))

    optional_relations = [("Replaces", 0.09), ("Provides", 0.15), ("Depends", 0.88),
                          ("Recommends", 0.16), ("Suggests", 0.18), ("Breaks", 0.08),
                          ("Conflicts", 0.05)]
    for field, frequency in optional_relations:
        if rng.random() < frequency:
            fields.append((field, relations(rng, all_names, 1, 5 if field == "Depends" else 2)))

    fields.append(("Description", sentence(rng, 3, 8)))
    if rng.random() < 0.93:
        fields.append(("Homepage", f"https://www.example.org/{name}"))
    fields.append(("Description-md5", "%032x" % rng.getrandbits(128)))
    if rng.random() < 0.48:
        fields.append(("Tag", "devel::library, implemented-in::c, role::shared-lib"))
    fields += [
        ("Section", rng.choice(SECTIONS)),
        ("Priority", rng.choice(PRIORITIES)),
        ("Filename", f"pool/main/{name[0]}/{name}/{name}_{list_version.split(':')[-1]}_{arch}.deb"),
        ("Size", str(rng.randint(1000, 5000000))),
        ("MD5sum", "%032x" % rng.getrandbits(128)),
        ("SHA256", "%064x" % rng.getrandbits(256)),
    ]
    return "".join(f"{key}: {value}\n" for key, value in fields)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, help="number of package stanzas (rows) to write")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--apt-list", metavar="FILE", help="also write an apt Packages list to FILE")
    parser.add_argument("--updates", type=int, default=0,
                        help="number of installed packages the list offers a higher version of")
    parser.add_argument("--not-installed", type=int, default=0, metavar="N",
                        help="number of packages that are not installed to add to the list")
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"count must be at least 1, got {args.count}")

    rng = random.Random(args.seed)
    rows = generate_rows(args.count, rng)
    all_names = sorted({row[0] for row in rows})
    sys.stdout.write("\n".join(status_stanza(rng, row, all_names) for row in rows))

    if args.apt_list:
        listed = [row for row in rows if row[1] in ("amd64", "all") and row[3].endswith(" installed")]
        if args.updates > len(listed):
            parser.error(f"--updates {args.updates} exceeds the {len(listed)} installed amd64/all packages")
        updated = set(rng.sample(range(len(listed)), k=args.updates))
        with open(args.apt_list, "w", encoding="utf-8") as list_file:
            for index, (name, arch, installed_version, _) in enumerate(listed):
                list_version = higher_version(installed_version) if index in updated else installed_version
                list_file.write(list_stanza(rng, name, arch, list_version, all_names) + "\n")
            # Numbered names keep these apart from the installed ones and from each other.
            names = package_names(rng)
            for index in range(args.not_installed):
                name = f"{next(names)}-{index}"
                arch = rng.choice(["amd64", "amd64", "all"])
                list_file.write(list_stanza(rng, name, arch, version(rng), all_names) + "\n")


if __name__ == "__main__":
    main()
