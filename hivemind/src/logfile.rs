//! Container log files: what writes them, how they rotate, and how their lines read.
//!
//! containerd hands a container's stdout and stderr to a logging binary (`binary://` log URI):
//! the daemon's own executable, run as `hivemind log-driver <file>` by the shim. It writes one
//! line per line of output in the CRI format that `kubectl logs` readers know:
//!
//! ```text
//! 2026-11-30T13:30:00.123456789Z stdout F serving as web-1a2b3c
//! ```
//!
//! (`F` a full line, `P` a piece of a line longer than `MAX_LINE` bytes.) When the file would
//! grow past `MAX_FILE_BYTES` it is renamed to `<file>.1` (replacing the previous one) and a
//! new file is started: at most twice that per container on disk. Readers take `<file>.1`
//! then `<file>`; a line in another format (a file from before the driver) reads as text
//! without a time.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read, Write as _};
use std::os::fd::FromRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Size at which a container's log file is rotated.
pub const MAX_FILE_BYTES: u64 = 10 << 20;
/// Longest piece of a line written as one entry.
const MAX_LINE: usize = 16 << 10;

/// The previous file of `path`, after a rotation.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// When it was written (UTC, nanoseconds since the epoch); `None` for a line without one.
    pub time_ns: Option<i128>,
    /// `stdout` or `stderr`; empty when unknown.
    pub stream: &'a str,
    /// The text (without its newline).
    pub text: &'a str,
    /// The time as written (RFC 3339).
    pub time: &'a str,
}

/// Reads one line of a log file; a line in no known format is all text.
pub fn parse(line: &str) -> Line<'_> {
    let plain = Line {
        time_ns: None,
        stream: "",
        text: line,
        time: "",
    };
    let mut parts = line.splitn(4, ' ');
    let (Some(time), Some(stream), Some(tag), text) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain;
    };
    if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P") {
        return plain;
    }
    let Ok(at) = OffsetDateTime::parse(time, &Rfc3339) else {
        return plain;
    };
    Line {
        time_ns: Some(at.unix_timestamp_nanos()),
        stream,
        text: text.unwrap_or_default(),
        time,
    }
}

/// Now, as the driver writes it.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// A log file that rotates at `max` bytes.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max,
        })
    }

    /// Writes one entry: `<time> <stream> <F|P> <text>\n`, rotating first if it would not fit.
    pub fn write_entry(&mut self, stream: &str, partial: bool, text: &[u8]) -> io::Result<()> {
        let mut entry = Vec::with_capacity(text.len() + 48);
        entry.extend_from_slice(now_rfc3339().as_bytes());
        entry.push(b' ');
        entry.extend_from_slice(stream.as_bytes());
        entry.extend_from_slice(if partial { b" P " } else { b" F " });
        entry.extend_from_slice(text);
        entry.push(b'\n');
        if self.size > 0 && self.size + entry.len() as u64 > self.max {
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(&entry)?;
        self.size += entry.len() as u64;
        Ok(())
    }
}

/// Copies `input` into `file` as entries of `stream`, until the input ends.
pub fn copy_stream(input: impl Read, stream: &str, file: &Mutex<RotatingFile>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(MAX_LINE, input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        let full = line.last() == Some(&b'\n');
        if full {
            line.pop();
        }
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_entry(stream, !full && read == MAX_LINE, &line)?;
    }
}

/// `hivemind log-driver <file>`, as containerd's shim starts it: the container's stdout on fd
/// 3, stderr on fd 4, and fd 5 to close once ready. Returns when both streams end.
pub fn run_driver(path: &Path) -> io::Result<()> {
    let file = Arc::new(Mutex::new(RotatingFile::open(path, MAX_FILE_BYTES)?));
    // SAFETY: the shim passes these three descriptors open and to this process alone; each is
    // owned by one `File` from here on.
    let (stdout, stderr, ready) = unsafe {
        (
            File::from_raw_fd(3),
            File::from_raw_fd(4),
            File::from_raw_fd(5),
        )
    };
    // Closing the ready pipe tells the shim the container may start.
    drop(ready);
    let err_file = file.clone();
    let errors = std::thread::spawn(move || copy_stream(stderr, "stderr", &err_file));
    let out = copy_stream(stdout, "stdout", &file);
    let err = errors
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("stderr thread panicked")));
    out.and(err)
}

/// What was appended to `path` after `offset` (read from there, not the whole file), the
/// file's length now and its inode (a rotation gives a new one); `None` when it cannot be read.
pub async fn appended(path: &Path, offset: u64) -> Option<(Vec<u8>, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let metadata = file.metadata().await.ok()?;
    let (len, inode) = (metadata.len(), metadata.ino());
    if len <= offset {
        return Some((Vec::new(), len, inode));
    }
    file.seek(io::SeekFrom::Start(offset)).await.ok()?;
    let mut new = Vec::new();
    file.take(len - offset).read_to_end(&mut new).await.ok()?;
    Some((new, len, inode))
}

/// The `binary://` log URI that makes containerd's shim run `exe log-driver <path>`.
pub fn driver_uri(exe: &Path, path: &Path) -> String {
    format!(
        "binary://{}?log-driver={}",
        percent_encode(&exe.to_string_lossy()),
        percent_encode(&path.to_string_lossy())
    )
}

/// RFC 3986 percent-encoding of everything but unreserved characters and `/` (a path, or a
/// query value).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_with_their_time_and_stream_and_others_as_text() {
        let line = parse("2026-11-30T13:30:00.5Z stderr F oh no");
        assert_eq!(line.stream, "stderr");
        assert_eq!(line.text, "oh no");
        assert_eq!(line.time_ns, Some(1_796_045_400_500_000_000));
        let empty = parse("2026-11-30T13:30:00Z stdout F ");
        assert_eq!(empty.text, "");
        for raw in ["serving as web", "2026 stdout F x", "not-a-time stdout F x"] {
            assert_eq!(parse(raw).text, raw);
            assert_eq!(parse(raw).time_ns, None);
        }
    }

    #[test]
    fn the_file_rotates_at_its_size_and_keeps_one_previous_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let file = Mutex::new(RotatingFile::open(&path, 200).expect("open"));
        let input: Vec<u8> = (0..20)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        copy_stream(input.as_slice(), "stdout", &file).expect("copy");
        let current = std::fs::read_to_string(&path).expect("current");
        let previous = std::fs::read_to_string(rotated(&path)).expect("previous");
        assert!(current.len() <= 200 && previous.len() <= 200);
        assert!(
            current.trim_end().ends_with("stdout F line 19"),
            "{current}"
        );
        let kept: Vec<&str> = previous
            .lines()
            .chain(current.lines())
            .map(|l| parse(l).text)
            .collect();
        // The oldest lines went with the file before the previous one; the rest are in order.
        let first: usize = kept[0].trim_start_matches("line ").parse().expect("n");
        let expected: Vec<String> = (first..20).map(|i| format!("line {i}")).collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn a_long_line_is_written_in_pieces_and_the_uri_is_encoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("long.log");
        let file = Mutex::new(RotatingFile::open(&path, MAX_FILE_BYTES).expect("open"));
        let long = vec![b'x'; MAX_LINE + 10];
        copy_stream(long.as_slice(), "stdout", &file).expect("copy");
        let text = std::fs::read_to_string(&path).expect("read");
        let tags: Vec<&str> = text
            .lines()
            .map(|l| l.split(' ').nth(2).unwrap_or(""))
            .collect();
        assert_eq!(tags, ["P", "F"]);
        assert_eq!(
            driver_uri(
                Path::new("/usr/bin/hivemind"),
                Path::new("/var/lib/a b/c.log")
            ),
            "binary:///usr/bin/hivemind?log-driver=/var/lib/a%20b/c.log"
        );
    }
}
