//! The program named as PROXY: its words on the command line, found as the shell would find
//! it, and checked before anything runs, so a typo is one clear line now rather than a failed
//! phase per test.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::harness::ProxyCommand;

/// PROXY and its arguments, as every subcommand that runs a proxy takes them.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyWords {
    /// The proxy to test (a path, or a command on PATH) and arguments to put before its three
    /// positional arguments.
    #[arg(
        value_name = "PROXY",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub words: Vec<OsString>,
}

impl ProxyWords {
    /// The proxy to run, found and checked; None when no PROXY was given.
    pub fn command(&self) -> Result<Option<ProxyCommand>, String> {
        let Some((program, rest)) = self.words.split_first() else {
            return Ok(None);
        };
        let path = resolve(Path::new(program))?;
        check_script(&path, rest)?;
        Ok(Some(ProxyCommand {
            program: path,
            args: rest.to_vec(),
        }))
    }
}

/// The command line's words before its first `--` (all of them without one): the harness's own,
/// where a word starting with a dash is a flag and never PROXY.
pub fn before_dashes(args: &[OsString]) -> &[OsString] {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    &args[..end]
}

/// A word starting with a dash where PROXY goes, typed before any `--`, is a flag we do not
/// know, not a program: saying so beats "proxy '--bogus' is not a file". (`ours` is
/// [`before_dashes`]; after a `--`, PROXY may be any word.)
pub fn unknown_flag(proxy: &[OsString], ours: &[OsString]) -> Result<(), String> {
    match proxy.first() {
        Some(first)
            if ours.contains(first) && first.to_string_lossy().starts_with('-') && first != "-" =>
        {
            Err(format!(
                "unexpected argument '{}' (see --help; a proxy's own options go after PROXY)",
                first.to_string_lossy()
            ))
        }
        _ => Ok(()),
    }
}

/// Finds PROXY as the shell would (a path if it has a slash, else on PATH) and checks it can run,
/// so a typo is one clear line now rather than ten failed phases.
pub fn resolve(program: &Path) -> Result<PathBuf, String> {
    let shown = program.display();
    let path = if program.components().count() > 1 || program.to_string_lossy().contains('/') {
        program.to_path_buf()
    } else {
        match on_path(program) {
            Some(p) => p,
            None => {
                return Err(format!(
                    "proxy '{shown}' is not a file and was not found on PATH"
                ));
            }
        }
    };
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("proxy '{shown}' cannot be used: {e}"))?;
    if meta.is_dir() {
        return Err(format!("proxy '{shown}' is a directory, not an executable"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "proxy '{shown}' is not executable (try chmod +x, or name its interpreter: python3 {shown})"
        ));
    }
    if let Some(line) = shebang(&path) {
        let mut words = line.split_whitespace();
        let interp = words.next().unwrap_or_default();
        if !is_executable_file(Path::new(interp)) {
            return Err(format!(
                "proxy '{shown}' names the interpreter '{interp}' on its #! line, which does not exist or is not executable"
            ));
        }
        // `#!/usr/bin/env NAME` finds NAME on PATH only when run: look now, as env would.
        if Path::new(interp).file_name().is_some_and(|n| n == "env") {
            let name = words.find(|w| !w.starts_with('-') && !w.contains('='));
            if let Some(name) = name {
                if on_path(Path::new(name)).is_none() {
                    return Err(format!(
                        "proxy '{shown}' runs '{name}' through {interp} on its #! line, and '{name}' was not found on PATH"
                    ));
                }
            }
        }
    }
    Ok(path)
}

/// Interpreters whose first argument, when it is not an option, is the script to run.
const SCRIPT_INTERPRETERS: &[&str] = &[
    "python", "python2", "python3", "pypy", "pypy3", "perl", "ruby", "node", "nodejs", "php",
    "lua", "sh", "bash", "dash", "zsh", "ksh", "tclsh",
];

/// `python3 ./proxy.py` where the script is not there: the interpreter would start, fail, and
/// fail every phase; say so now. Only the argument right after a known interpreter is checked,
/// and only when it is not an option (`sh -c '...'`, `python3 -m module` are left alone).
fn check_script(program: &Path, args: &[OsString]) -> Result<(), String> {
    let Some(name) = program.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    // python3.11 and the like: the version suffix aside.
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let known = SCRIPT_INTERPRETERS.contains(&name) || SCRIPT_INTERPRETERS.contains(&base);
    let Some(script) = args.first() else {
        return Ok(());
    };
    if !known || script.to_string_lossy().starts_with('-') {
        return Ok(());
    }
    let script = Path::new(script);
    if script.exists() {
        return Ok(());
    }
    Err(format!(
        "proxy script '{}' for {name} does not exist",
        script.display()
    ))
}

/// The first executable file named `program` in PATH's directories.
fn on_path(program: &Path) -> Option<PathBuf> {
    if program.to_string_lossy().contains('/') {
        return is_executable_file(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|c| is_executable_file(c))
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A script's `#!` line, after the `#!`, if it has one.
fn shebang(path: &Path) -> Option<String> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    Some(String::from_utf8_lossy(line).into_owned())
}
