//! `edged image pull`'s progress: a line per layer with bytes, total and rate, redrawn in
//! place on a terminal; on a pipe, a plain line when a layer starts, exists or is done.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::registry::Progress;
use super::{human_size, short_id};

/// Redraws at most this often on a terminal.
const REDRAW: Duration = Duration::from_millis(200);

struct Layer {
    done: u64,
    total: u64,
    started: Instant,
    state: &'static str,
}

struct State {
    layers: BTreeMap<String, Layer>,
    order: Vec<String>,
    drawn: usize,
    last: Option<Instant>,
}

/// The progress view of one pull.
pub struct View {
    tty: bool,
    st: Mutex<State>,
}

/// One layer's line.
fn line(digest: &str, l: &Layer) -> String {
    let secs = l.started.elapsed().as_secs_f64().max(0.001);
    match l.state {
        "exists" => format!("{}: already present", short_id(digest)),
        "done" => format!(
            "{}: done {} in {:.1}s",
            short_id(digest),
            human_size(l.total),
            secs
        ),
        _ => format!(
            "{}: {} / {} ({}/s)",
            short_id(digest),
            human_size(l.done),
            human_size(l.total),
            human_size((l.done as f64 / secs) as u64)
        ),
    }
}

impl View {
    /// A view writing to stdout (`tty`: redraw in place).
    pub fn new(tty: bool) -> View {
        View {
            tty,
            st: Mutex::new(State {
                layers: BTreeMap::new(),
                order: Vec::new(),
                drawn: 0,
                last: None,
            }),
        }
    }

    /// Takes one progress report.
    pub fn update(&self, p: &Progress) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let mut plain: Option<String> = None;
        let mut force = false;
        match p {
            Progress::Resolved {
                manifest,
                fetch,
                layers,
            } => {
                plain = Some(format!(
                    "manifest {}: {fetch} of {layers} layers to fetch",
                    short_id(manifest)
                ));
            }
            Progress::Exists(d) => {
                let l = Layer {
                    done: 0,
                    total: 0,
                    started: Instant::now(),
                    state: "exists",
                };
                plain = Some(line(d, &l));
                st.order.push(d.clone());
                st.layers.insert(d.clone(), l);
                force = true;
            }
            Progress::Bytes {
                digest,
                done,
                total,
            } => {
                if !st.layers.contains_key(digest) {
                    st.order.push(digest.clone());
                    st.layers.insert(
                        digest.clone(),
                        Layer {
                            done: 0,
                            total: *total,
                            started: Instant::now(),
                            state: "pulling",
                        },
                    );
                    plain = Some(format!(
                        "{}: pulling {}",
                        short_id(digest),
                        human_size(*total)
                    ));
                }
                if let Some(l) = st.layers.get_mut(digest) {
                    l.done = *done;
                    l.total = *total;
                }
            }
            Progress::Done(d) => {
                if let Some(l) = st.layers.get_mut(d) {
                    l.state = "done";
                    plain = Some(line(d, l));
                }
                force = true;
            }
            Progress::Unpacking => {
                plain = Some("unpacking".into());
                force = true;
            }
        }
        let mut out = std::io::stdout().lock();
        if !self.tty {
            if let Some(l) = plain {
                let _ = writeln!(out, "{l}");
            }
            return;
        }
        if !force && st.last.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        st.last = Some(Instant::now());
        let mut text = String::new();
        if st.drawn > 0 {
            text.push_str(&format!("\x1b[{}A", st.drawn));
        }
        for d in &st.order {
            if let Some(l) = st.layers.get(d) {
                text.push_str(&format!("\x1b[2K{}\n", line(d, l)));
            }
        }
        if matches!(p, Progress::Unpacking) {
            text.push_str("\x1b[2Kunpacking\n");
        }
        st.drawn = st.order.len();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Ends the view (the cursor below it).
    pub fn finish(&self) {
        let _ = std::io::stdout().flush();
    }
}
