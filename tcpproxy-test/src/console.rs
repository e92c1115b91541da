//! Where the program's lines go: results on one stream (stdout), notes, warnings and errors on
//! the other (stderr). The command line's top (`crate::main_with_args`) makes the one console
//! of a run and hands it down; library code writes through it and never prints itself.

use std::fmt::Display;
use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};

/// A stream shared by every task of a run; each write is whole, so lines never interleave.
type Stream = Arc<Mutex<Box<dyn Write + Send>>>;

/// The two streams of a run. Clones write to the same streams.
#[derive(Clone)]
pub struct Console {
    out: Stream,
    err: Stream,
    /// Whether results go to a terminal (a progress line is drawn only there).
    out_is_terminal: bool,
}

impl Console {
    /// The process's stdout and stderr.
    pub fn stdio() -> Console {
        Console::new(
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
            std::io::stdout().is_terminal(),
        )
    }

    fn new(out: Box<dyn Write + Send>, err: Box<dyn Write + Send>, terminal: bool) -> Console {
        Console {
            out: Arc::new(Mutex::new(out)),
            err: Arc::new(Mutex::new(err)),
            out_is_terminal: terminal,
        }
    }

    pub fn out_is_terminal(&self) -> bool {
        self.out_is_terminal
    }

    /// Lets `write` write results (a renderer that takes a writer), then flushes them. Write
    /// errors are the caller's to ignore: a closed stdout (`| head`) must not turn into a panic,
    /// and the exit status still tells.
    pub fn with_out<T>(&self, write: impl FnOnce(&mut dyn Write) -> T) -> T {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let result = write(&mut **out);
        let _ = out.flush();
        result
    }

    /// `text` as it is, on the results stream.
    pub fn out(&self, text: &str) {
        self.with_out(|w| {
            let _ = w.write_all(text.as_bytes());
        });
    }

    /// `line` and a newline, on the results stream.
    pub fn out_line(&self, line: impl Display) {
        self.out(&format!("{line}\n"));
    }

    /// `line` and a newline, on the notes stream.
    pub fn err_line(&self, line: impl Display) {
        let mut err = self.err.lock().unwrap_or_else(|e| e.into_inner());
        let _ = err.write_all(format!("{line}\n").as_bytes());
        let _ = err.flush();
    }
}

#[cfg(test)]
pub(crate) mod capture {
    //! A console whose streams are kept, for tests of what a run says.

    use super::*;

    /// What was written to one stream.
    #[derive(Clone, Default)]
    pub struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Kept {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A console and what it was given: (results, notes).
    pub fn console() -> (Console, Kept, Kept) {
        let (out, err) = (Kept::default(), Kept::default());
        let console = Console::new(Box::new(out.clone()), Box::new(err.clone()), false);
        (console, out, err)
    }

    #[test]
    fn results_and_notes_go_to_their_own_streams_as_whole_lines() {
        let (console, out, err) = console();
        console.out("a ");
        console.out_line(1);
        console.err_line("note: b");
        console.with_out(|w| write!(w, "c")).unwrap();
        assert_eq!(out.text(), "a 1\nc");
        assert_eq!(err.text(), "note: b\n");
    }
}
