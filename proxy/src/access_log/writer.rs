//! Access log output: one writer thread per destination, fed over a bounded channel.
//!
//! The data path formats its line and hands it over with `try_send`; a full channel drops the line and
//! counts `access_log.dropped` rather than stall a request on a slow disk. The thread owns the buffered
//! file and flushes it every `--file-flush-interval-msec`, on `Writers::flush`, and when the last
//! logger using it is gone. File I/O stays off the async workers entirely.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::{Counter, Store};

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

enum Target {
    File(File),
    Stdout,
    Stderr,
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Target::File(f) => f.write(buf),
            Target::Stdout => io::stdout().lock().write(buf),
            Target::Stderr => io::stderr().lock().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Target::File(f) => f.flush(),
            Target::Stdout => io::stdout().lock().flush(),
            Target::Stderr => io::stderr().lock().flush(),
        }
    }
}

/// Where one logger's lines go. Cloning shares the destination.
#[derive(Debug, Clone)]
pub struct Sink {
    tx: SyncSender<Msg>,
    dropped: Counter,
}

impl Sink {
    /// Queues one formatted line without blocking.
    pub fn write(&self, line: String) {
        match self.tx.try_send(Msg::Line(line.into_bytes())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        // Waiting for room is fine here: flushing is a shutdown or test action, not the data path.
        self.tx.send(Msg::Flush(ack_tx)).is_ok() && ack_rx.recv_timeout(timeout).is_ok()
    }
}

struct Inner {
    flush_interval: Duration,
    capacity: usize,
    dropped: Counter,
    sinks: Mutex<HashMap<String, Sink>>,
}

/// The process's log destinations: one per path, shared by every logger naming it (as Envoy's access
/// log manager does). Cloning shares them.
#[derive(Clone)]
pub struct Writers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers")
            .field("flush_interval", &self.inner.flush_interval)
            .finish()
    }
}

/// Lines queued per destination before new ones are dropped.
pub const DEFAULT_QUEUE_LINES: usize = 16 * 1024;

impl Writers {
    /// `flush_interval` is `--file-flush-interval-msec`.
    pub fn new(store: &Store, flush_interval: Duration) -> Self {
        Self::with_capacity(store, flush_interval, DEFAULT_QUEUE_LINES)
    }

    pub fn with_capacity(store: &Store, flush_interval: Duration, capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                flush_interval: flush_interval.max(Duration::from_millis(1)),
                capacity: capacity.max(1),
                dropped: store.counter("access_log.dropped"),
                sinks: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sink>> {
        self.inner.sinks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The destination for `path`, opened (append, create) on first use. `/dev/stdout` and
    /// `/dev/stderr` write to the process's own streams.
    pub fn open(&self, path: &str) -> io::Result<Sink> {
        let mut sinks = self.lock();
        if let Some(s) = sinks.get(path) {
            return Ok(s.clone());
        }
        let target = match path {
            "/dev/stdout" => Target::Stdout,
            "/dev/stderr" => Target::Stderr,
            _ => Target::File(OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (tx, rx) = mpsc::sync_channel(self.inner.capacity);
        let interval = self.inner.flush_interval;
        let name = path.to_string();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(rx, target, interval, &name))?;
        let sink = Sink {
            tx,
            dropped: self.inner.dropped.clone(),
        };
        sinks.insert(path.to_string(), sink.clone());
        Ok(sink)
    }

    /// Writes out everything queued so far, on every destination (blocks; call it from a blocking
    /// context on shutdown). Returns false if some destination did not confirm within `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let sinks: Vec<Sink> = self.lock().values().cloned().collect();
        // Every destination is flushed even after one fails to confirm.
        let mut all = true;
        for s in &sinks {
            all &= s.flush(timeout);
        }
        all
    }

    /// Lines dropped because a destination's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.get()
    }
}

fn run(rx: mpsc::Receiver<Msg>, target: Target, interval: Duration, path: &str) {
    let mut out = BufWriter::with_capacity(64 * 1024, target);
    let mut deadline: Option<Instant> = None;
    let report = |r: io::Result<()>| {
        if let Err(e) = r {
            tracing::warn!(path, error = %e, "access log write failed");
        }
    };
    loop {
        let msg = match deadline {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Line(line)) => {
                report(out.write_all(&line));
                deadline.get_or_insert_with(|| Instant::now() + interval);
            }
            Ok(Msg::Flush(ack)) => {
                report(out.flush());
                deadline = None;
                let _ = ack.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                report(out.flush());
                deadline = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                report(out.flush());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("remora-{}-{name}", std::process::id()))
    }

    #[test]
    fn lines_land_after_flush_and_on_the_timer() {
        let path = temp_path("writer.log");
        let _ = std::fs::remove_file(&path);
        let store = Store::new();
        let writers = Writers::new(&store, Duration::from_millis(50));
        let p = path.to_str().expect("utf8 path");
        let sink = writers.open(p).expect("open");
        sink.write("one\n".into());
        // Same path, same destination: lines interleave in order.
        writers.open(p).expect("reopen").write("two\n".into());
        assert!(writers.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");

        sink.write("three\n".into());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).expect("read") != "one\ntwo\nthree\n" {
            assert!(Instant::now() < deadline, "the flush timer never fired");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let store = Store::new();
        let writers = Writers::with_capacity(&store, Duration::from_secs(3600), 1);
        let (tx, rx) = mpsc::sync_channel(1);
        // A sink whose writer never reads: the second line cannot be queued.
        let sink = Sink {
            tx,
            dropped: writers.inner.dropped.clone(),
        };
        sink.write("a".into());
        sink.write("b".into());
        drop(rx);
        assert_eq!(store.counter("access_log.dropped").get(), 1);
        assert_eq!(writers.dropped(), 1);
    }

    #[test]
    fn unopenable_path_is_an_error() {
        let writers = Writers::new(&Store::new(), Duration::from_secs(1));
        assert!(writers.open("/nonexistent-dir/x.log").is_err());
    }
}
