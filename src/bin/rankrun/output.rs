//! `--tag-output`: copies each rank's stdout and stderr line by line to rankrun's own,
//! each line prefixed with `[rank] ` and written whole, so lines of different ranks never mix.

use std::io::{BufRead, BufReader, Read, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest line copied in one piece; longer ones are split (a rank that prints megabytes
/// without a newline must not make rankrun hold them all).
const MAX_LINE: usize = 1 << 20;

/// Copies `from` to stdout (`err == false`) or stderr, tagging each line with `rank`.
pub fn tag(
    rank: usize,
    from: impl Read + Send + 'static,
    err: bool,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("tag{rank}"))
        .stack_size(64 << 10)
        .spawn(move || {
            let prefix = format!("[{rank}] ");
            let mut r = BufReader::new(from);
            let mut line = Vec::new();
            let mut broken = false;
            loop {
                line.clear();
                match r
                    .by_ref()
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut line)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                if broken {
                    // rankrun's own output is gone (a closed pipe): keep draining so the
                    // rank does not block on a full pipe.
                    continue;
                }
                let res = if err {
                    let mut o = std::io::stderr().lock();
                    o.write_all(prefix.as_bytes())
                        .and_then(|()| o.write_all(&line))
                } else {
                    let mut o = std::io::stdout().lock();
                    o.write_all(prefix.as_bytes())
                        .and_then(|()| o.write_all(&line))
                        .and_then(|()| o.flush())
                };
                broken = res.is_err();
            }
        })
}

/// Waits until `deadline` for the copying threads; ones still running (a process that
/// outlived its rank still holds the pipe) are left behind.
pub fn join(threads: Vec<JoinHandle<()>>, deadline: Instant) {
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}
