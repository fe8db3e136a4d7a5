//! The local terminal for `-t`: raw mode while a session runs (restored when the guard drops,
//! and by [`RawMode::restore`] before an exit), and its window size.

use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::BorrowedFd;

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    nix::unistd::isatty(0).unwrap_or(false)
}

/// Stdin in raw mode until dropped.
pub struct RawMode {
    saved: Option<Termios>,
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

impl RawMode {
    /// Puts stdin's terminal in raw mode (no echo, no line editing, no signals from keys: a
    /// Ctrl-C goes to the remote process).
    pub fn enter() -> nix::Result<RawMode> {
        let saved = termios::tcgetattr(stdin_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin_fd(), SetArg::TCSADRAIN, &raw)?;
        Ok(RawMode { saved: Some(saved) })
    }

    /// Restores the terminal as it was (once).
    pub fn restore(&mut self) {
        if let Some(t) = self.saved.take() {
            let _ = termios::tcsetattr(stdin_fd(), SetArg::TCSADRAIN, &t);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The terminal's size (columns, rows) from stdout, else stdin; `None` when neither is one.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in [1, 0] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct passed; nix has no safe call.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}
