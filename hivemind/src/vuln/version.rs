//! Version ordering, each ecosystem by its own rules: dpkg's (Debian), apk's (Alpine), SemVer
//! (crates, npm, Go modules) and PEP 440 (Python). A vulnerability's affected range only means
//! something in its ecosystem's order: `1.0~rc1` comes before `1.0` for dpkg, `1.0_rc1` before
//! `1.0` for apk, `1.0rc1` before `1.0` for Python.

use std::cmp::Ordering;

/// How an ecosystem orders its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Dpkg,
    Apk,
    Semver,
    Pep440,
}

impl Scheme {
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Dpkg => dpkg(a, b),
            Scheme::Apk => apk(a, b),
            Scheme::Semver => semver(a, b),
            Scheme::Pep440 => pep440(a, b),
        }
    }
}

/// dpkg's order (`deb-version(7)`): `[epoch:]upstream[-revision]`, the epoch compared as a
/// number, then upstream and revision each by `verrevcmp`: runs of non-digits compared
/// character by character (letters before other characters, `~` before everything, even the
/// end), runs of digits as numbers.
pub fn dpkg(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = dpkg_parts(a);
    let (eb, ub, rb) = dpkg_parts(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

fn dpkg_parts(version: &str) -> (u64, &str, &str) {
    let version = version.trim();
    let (epoch, rest) = match version.split_once(':') {
        Some((epoch, rest)) if epoch.bytes().all(|b| b.is_ascii_digit()) && !epoch.is_empty() => {
            (epoch.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, version),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// dpkg's weight of a character in a non-digit run; 0 for the end.
fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (dpkg_order(a.get(i).copied()), dpkg_order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// apk's order (apk-tools `version.c`): dotted numbers (a later one with a leading zero
/// compared as a decimal fraction), an optional letter, suffixes (`_alpha` < `_beta` < `_pre` <
/// `_rc` < none < `_cvs` < `_svn` < `_git` < `_hg` < `_p`, each with an optional number), then
/// `-rN`.
pub fn apk(a: &str, b: &str) -> Ordering {
    let (a, b) = (ApkVersion::parse(a), ApkVersion::parse(b));
    for k in 0..a.numbers.len().max(b.numbers.len()) {
        match (a.numbers.get(k), b.numbers.get(k)) {
            (Some(x), Some(y)) => {
                let order = if k > 0 && (x.starts_with('0') || y.starts_with('0')) {
                    // A fraction: 1.02 < 1.1, compared as text with the shorter padded.
                    x.trim_end_matches('0').cmp(y.trim_end_matches('0'))
                } else {
                    number(x).cmp(&number(y))
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (None, None) => break,
        }
    }
    a.letter
        .cmp(&b.letter)
        .then_with(|| {
            for k in 0..a.suffixes.len().max(b.suffixes.len()) {
                let none = (APK_NO_SUFFIX, 0);
                let (x, y) = (
                    a.suffixes.get(k).copied().unwrap_or(none),
                    b.suffixes.get(k).copied().unwrap_or(none),
                );
                if x != y {
                    return x.cmp(&y);
                }
            }
            Ordering::Equal
        })
        .then_with(|| a.revision.cmp(&b.revision))
}

/// The rank of "no suffix" among apk's suffixes.
const APK_NO_SUFFIX: u8 = 4;
const APK_SUFFIXES: [(&str, u8); 9] = [
    ("alpha", 0),
    ("beta", 1),
    ("pre", 2),
    ("rc", 3),
    ("cvs", 5),
    ("svn", 6),
    ("git", 7),
    ("hg", 8),
    ("p", 9),
];

fn number(digits: &str) -> u128 {
    digits.parse().unwrap_or(u128::MAX)
}

#[derive(Debug, Default)]
struct ApkVersion<'a> {
    numbers: Vec<&'a str>,
    letter: Option<u8>,
    suffixes: Vec<(u8, u128)>,
    revision: u128,
}

impl<'a> ApkVersion<'a> {
    fn parse(version: &'a str) -> Self {
        let mut out = Self::default();
        let (main, revision) = match version.trim().rsplit_once("-r") {
            Some((main, rev)) if !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()) => {
                (main, number(rev))
            }
            _ => (version.trim(), 0),
        };
        out.revision = revision;
        let (head, suffixes) = main.split_once('_').unwrap_or((main, ""));
        let mut rest = head;
        loop {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            out.numbers.push(&rest[..end]);
            rest = &rest[end..];
            match rest.strip_prefix('.') {
                Some(next) => rest = next,
                None => break,
            }
        }
        if let Some(c) = rest.bytes().next().filter(u8::is_ascii_lowercase) {
            out.letter = Some(c);
        }
        for suffix in suffixes.split('_').filter(|s| !s.is_empty()) {
            let name_end = suffix
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(suffix.len());
            let rank = APK_SUFFIXES
                .iter()
                .find(|(name, _)| *name == &suffix[..name_end])
                .map_or(APK_NO_SUFFIX, |(_, rank)| *rank);
            let n = if name_end < suffix.len() {
                number(&suffix[name_end..])
            } else {
                0
            };
            out.suffixes.push((rank, n));
        }
        out
    }
}

/// SemVer 2.0's order, leniently read: a leading `v`, missing minor or patch numbers (0),
/// build metadata ignored; a pre-release comes before its release, its dot-separated
/// identifiers compared as numbers when both are numeric, numbers before text.
pub fn semver(a: &str, b: &str) -> Ordering {
    let (a, b) = (SemVer::parse(a), SemVer::parse(b));
    a.core.cmp(&b.core).then_with(|| match (a.pre, b.pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let mut xs = x.split('.');
            let mut ys = y.split('.');
            loop {
                match (xs.next(), ys.next()) {
                    (None, None) => return Ordering::Equal,
                    (None, Some(_)) => return Ordering::Less,
                    (Some(_), None) => return Ordering::Greater,
                    (Some(p), Some(q)) => {
                        let numeric =
                            |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
                        let order = match (numeric(p), numeric(q)) {
                            (true, true) => number(p).cmp(&number(q)),
                            (true, false) => Ordering::Less,
                            (false, true) => Ordering::Greater,
                            (false, false) => p.cmp(q),
                        };
                        if order != Ordering::Equal {
                            return order;
                        }
                    }
                }
            }
        }
    })
}

struct SemVer<'a> {
    core: [u128; 3],
    pre: Option<&'a str>,
}

impl<'a> SemVer<'a> {
    fn parse(version: &'a str) -> Self {
        let version = version.trim();
        let version = version.strip_prefix('v').unwrap_or(version);
        let version = version.split_once('+').map_or(version, |(v, _)| v);
        let (core, pre) = match version.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (version, None),
        };
        let mut numbers = [0; 3];
        for (slot, part) in numbers.iter_mut().zip(core.split('.')) {
            *slot = number(part);
        }
        Self { core: numbers, pre }
    }
}

/// PEP 440's order: `[N!]N(.N)*[{a|b|rc}N][.postN][.devN]`, normalised (case, `alpha`/`beta`/
/// `c`/`pre`/`preview` spellings, `-`/`_`/`.` separators, a leading `v`, local labels
/// ignored); trailing zeros of the release do not count (`1.0 == 1.0.0`); a dev release comes
/// before its pre-releases, which come before the release, which comes before its post
/// releases.
pub fn pep440(a: &str, b: &str) -> Ordering {
    Pep440::parse(a).key().cmp(&Pep440::parse(b).key())
}

#[derive(Debug, Default)]
struct Pep440 {
    epoch: u128,
    release: Vec<u128>,
    pre: Option<(u8, u128)>,
    post: Option<u128>,
    dev: Option<u128>,
}

/// A pre-release's place: (kind, number); `None` sorts after every pre-release, a dev-only
/// release before all of them.
type PreKey = (i8, u128);

impl Pep440 {
    fn parse(version: &str) -> Self {
        let lower = version.trim().to_ascii_lowercase();
        let lower = lower.split_once('+').map_or(lower.as_str(), |(v, _)| v);
        let lower = lower.strip_prefix('v').unwrap_or(lower);
        let mut out = Self::default();
        let (epoch, rest) = match lower.split_once('!') {
            Some((e, rest)) => (number(e), rest),
            None => (0, lower),
        };
        out.epoch = epoch;
        let bytes = rest.as_bytes();
        let mut k = 0;
        // The release: dotted numbers.
        loop {
            let start = k;
            while k < bytes.len() && bytes[k].is_ascii_digit() {
                k += 1;
            }
            if start == k {
                break;
            }
            out.release.push(number(&rest[start..k]));
            if k + 1 < bytes.len() && bytes[k] == b'.' && bytes[k + 1].is_ascii_digit() {
                k += 1;
            } else {
                break;
            }
        }
        // Labels: pre, post, dev, each optionally after a separator, with a number.
        let mut tail = &rest[k..];
        while !tail.is_empty() {
            tail = tail.trim_start_matches(['.', '-', '_']);
            let label_end = tail
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(tail.len());
            let label = &tail[..label_end];
            let after = tail[label_end..].trim_start_matches(['.', '-', '_']);
            let digits_end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let n = if digits_end > 0 {
                number(&after[..digits_end])
            } else {
                0
            };
            match label {
                "a" | "alpha" => out.pre = Some((0, n)),
                "b" | "beta" => out.pre = Some((1, n)),
                "rc" | "c" | "pre" | "preview" => out.pre = Some((2, n)),
                "post" | "rev" | "r" => out.post = Some(n),
                "dev" => out.dev = Some(n),
                // `1.0-1`: an implicit post release.
                "" if digits_end > 0 => out.post = Some(n),
                _ => break,
            }
            tail = &after[digits_end..];
        }
        while out.release.last() == Some(&0) {
            out.release.pop();
        }
        out
    }

    fn key(&self) -> (u128, Vec<u128>, PreKey, i128, i128) {
        let pre = match (self.pre, self.post, self.dev) {
            (Some((kind, n)), _, _) => (kind as i8, n),
            (None, None, Some(_)) => (-1, 0),
            (None, _, _) => (i8::MAX, 0),
        };
        let post = self.post.map_or(-1, |n| n.min(i128::MAX as u128) as i128);
        let dev = self
            .dev
            .map_or(i128::MAX, |n| n.min(i128::MAX as u128) as i128);
        (self.epoch, self.release.clone(), pre, post, dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn check(scheme: Scheme, cases: &[(&str, &str, Ordering)]) {
        for (a, b, want) in cases {
            assert_eq!(scheme.compare(a, b), *want, "{scheme:?}: {a} vs {b}");
            assert_eq!(
                scheme.compare(b, a),
                want.reverse(),
                "{scheme:?}: {b} vs {a}"
            );
        }
    }

    #[test]
    fn dpkg_orders_epochs_tildes_and_revisions() {
        check(
            Scheme::Dpkg,
            &[
                ("1.0", "1.0", Equal),
                ("1.0", "1.00", Equal),
                ("1.0~rc1", "1.0", Less),
                ("1.0~~", "1.0~", Less),
                ("1.0~", "1.0", Less),
                ("1.0", "1.0a", Less),
                ("1.0a", "1.0+", Less),
                ("1:0.9", "2.0", Greater),
                ("0:2.0", "2.0", Equal),
                ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
                ("2.36-9", "2.36-9+deb12u1", Less),
                ("1.2.3-1", "1.2.3-1~bpo12+1", Greater),
                ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
                ("1.9", "1.10", Less),
                ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ],
        );
    }

    #[test]
    fn apk_orders_suffixes_letters_and_revisions() {
        check(
            Scheme::Apk,
            &[
                ("1.2.3-r0", "1.2.3-r1", Less),
                ("1.2.3_rc1-r0", "1.2.3-r0", Less),
                ("1.2.3_alpha", "1.2.3_beta", Less),
                ("1.2.3_p1", "1.2.3", Greater),
                ("1.2.3a", "1.2.3", Greater),
                ("1.2.3a", "1.2.3b", Less),
                ("1.2.10", "1.2.9", Greater),
                ("1.2", "1.2.1", Less),
                ("3.0.12-r4", "3.0.12-r4", Equal),
                ("1.02", "1.1", Less),
            ],
        );
    }

    #[test]
    fn semver_orders_pre_releases_before_releases() {
        check(
            Scheme::Semver,
            &[
                ("1.0.0", "1.0.0", Equal),
                ("v1.2.3", "1.2.3", Equal),
                ("1.0.0-alpha", "1.0.0", Less),
                ("1.0.0-alpha", "1.0.0-alpha.1", Less),
                ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
                ("1.0.0-beta.2", "1.0.0-beta.11", Less),
                ("1.0.0-rc.1", "1.0.0", Less),
                ("1.0.0+build", "1.0.0", Equal),
                ("1.10.0", "1.9.0", Greater),
                ("0.4", "0.4.0", Equal),
            ],
        );
    }

    #[test]
    fn pep440_orders_dev_pre_post_and_epochs() {
        check(
            Scheme::Pep440,
            &[
                ("1.0", "1.0.0", Equal),
                ("1.0.dev1", "1.0a1", Less),
                ("1.0a1", "1.0b1", Less),
                ("1.0b2", "1.0rc1", Less),
                ("1.0rc1", "1.0", Less),
                ("1.0", "1.0.post1", Less),
                ("1.0-1", "1.0.post1", Equal),
                ("1.0alpha1", "1.0a1", Equal),
                ("1.0.post1.dev1", "1.0.post1", Less),
                ("1!0.5", "2.0", Greater),
                ("2.31.0", "2.4.0", Greater),
                ("1.0+local.1", "1.0", Equal),
            ],
        );
    }
}
