//! `--sandbox`: the proxy runs in a network namespace of its own (only loopback, no route), made
//! directly as root or through a user namespace without privilege; a host that refuses one is
//! named with exit 3 under `on` and falls back under `auto`; `off` leaves the host's network.
//! `--network`: inside that namespace alone, its loopback loses or queues segments, and the
//! reference still passes every phase.

use std::time::Duration;

use crate::support::{
    HeavySlot, Run, assert_nothing_left, harness_bin, run_harness, write_executable,
};

const LIMIT: Duration = Duration::from_secs(60);

/// A stand-in proxy that says on stderr which interfaces and routes it sees (reading /proc
/// only, sending nothing), then exits: the phase fails and its report carries that stderr.
/// /sys/class/net would not do: sysfs shows the namespace of whoever mounted it.
const NETWORK_REPORTER: &str = "#!/bin/sh
echo \"interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ')\" >&2
echo \"routes: $(tail -n +2 /proc/net/route | wc -l)\" >&2
echo \"table: $(cat /proc/sys/net/ipv4/tcp_ehash_entries 2>/dev/null || echo none)\" >&2
exit 7
";

/// One quick phase against a stand-in proxy (`script`, which reports on stderr and exits) with
/// `--sandbox MODE`, as JSON; with the stand-in's stderr, which the report carries.
fn stand_in(mode: &str, script: &str) -> (Run, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stand-in");
    write_executable(&path, script);
    let run = run_harness(
        &[
            "--sandbox",
            mode,
            "--only",
            "echo/single",
            "--format",
            "json",
            "--",
            path.to_str().unwrap(),
        ],
        LIMIT,
    );
    // It never listens: exit 4, one phase, failed with its stderr.
    assert_eq!(run.code, Some(4), "{}", run.dump());
    let json: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", run.dump()));
    let tail = json["phases"][0]["stderr_tail"]
        .as_str()
        .unwrap_or_else(|| panic!("no stderr_tail\n{}", run.dump()))
        .to_string();
    assert_nothing_left(&run);
    (run, json, tail)
}

/// The buckets of the connection table this process sees (`tcp_ehash_entries`: negative where
/// the namespace shares the host's), or None before Linux 6.1, which has no such setting.
fn table_of(text: Option<&str>) -> Option<i64> {
    text.and_then(|t| t.trim().parse().ok())
}

/// The namespace's own connection table, smaller than the host's (`sandbox::tables`: walking
/// the host's in /proc/net/tcp took a suite's harness a second of CPU), where the kernel can.
#[track_caller]
fn assert_own_table(seen: &str, run_dump: &str) {
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries").ok();
    let child = std::path::Path::new("/proc/sys/net/ipv4/tcp_child_ehash_entries").exists();
    match (table_of(host.as_deref()), table_of(Some(seen))) {
        (Some(host), Some(own)) if child => {
            assert!(
                own > 0 && own < host.abs(),
                "table {own} against the host's {host}\n{run_dump}"
            );
        }
        _ => {}
    }
}

/// One quick phase against [`NETWORK_REPORTER`] with `--sandbox MODE`, as JSON.
fn report_network(mode: &str) -> (Run, serde_json::Value) {
    let (run, json, _) = stand_in(mode, NETWORK_REPORTER);
    (run, json)
}

/// What the stand-in printed: its `interfaces:` and `routes:` values.
#[track_caller]
fn seen(run: &Run, json: &serde_json::Value) -> (String, String) {
    let tail = json["phases"][0]["stderr_tail"]
        .as_str()
        .unwrap_or_else(|| panic!("no stderr_tail\n{}", run.dump()));
    let value = |key: &str| {
        tail.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} in {tail:?}"))
            .trim()
            .to_string()
    };
    (value("interfaces: "), value("routes: "))
}

/// What the stand-in printed as its `table:` value.
#[track_caller]
fn seen_table(run: &Run, json: &serde_json::Value) -> String {
    let tail = json["phases"][0]["stderr_tail"]
        .as_str()
        .unwrap_or_default();
    tail.lines()
        .find_map(|l| l.strip_prefix("table: "))
        .unwrap_or_else(|| panic!("no table in {tail:?}\n{}", run.dump()))
        .trim()
        .to_string()
}

/// The interfaces this test process sees (the host's, as the harness would without a sandbox).
fn host_interfaces() -> String {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let mut names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    names.sort_unstable();
    names.join(" ")
}

#[test]
fn a_sandboxed_proxy_sees_only_loopback_and_no_route() {
    for mode in ["on", "auto"] {
        let (run, json) = report_network(mode);
        assert_eq!(json["sandbox"], "network namespace", "{}", run.dump());
        assert_eq!(
            seen(&run, &json),
            ("lo".into(), "0".into()),
            "{}",
            run.dump()
        );
        assert_own_table(&seen_table(&run, &json), &run.dump());
        assert!(!run.stderr.contains("warning"), "{}", run.dump());
    }
}

#[test]
fn off_leaves_the_proxy_on_the_host_network() {
    let (run, json) = report_network("off");
    assert_eq!(
        json["sandbox"],
        "host network: --sandbox off",
        "{}",
        run.dump()
    );
    assert_eq!(seen(&run, &json).0, host_interfaces(), "{}", run.dump());
    assert_eq!(
        seen_table(&run, &json),
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries")
            .map_or("none".into(), |t| t.trim().to_string()),
        "{}",
        run.dump()
    );
    assert!(!run.stderr.contains("warning"), "{}", run.dump());
}

#[test]
fn an_unprivileged_harness_makes_its_namespace_inside_a_user_namespace() {
    use std::os::unix::fs::PermissionsExt as _;
    // Run by nobody (setpriv, from util-linux) when the test runs as root; otherwise the test is
    // unprivileged already. Copies of the harness and the stand-in sit in a folder nobody can
    // read, wherever the checkout is.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let harness = dir.path().join("tcpproxy-test");
    std::fs::copy(harness_bin(), &harness).unwrap();
    let script = dir.path().join("report-network");
    write_executable(&script, NETWORK_REPORTER);
    let mut cmd = if nix::unistd::getuid().is_root() {
        let mut c = assert_cmd::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&harness);
        c
    } else {
        assert_cmd::Command::new(&harness)
    };
    let out = cmd
        .args([
            "--sandbox",
            "on",
            "--only",
            "echo/single",
            "--format",
            "json",
            "--",
        ])
        .arg(&script)
        .current_dir(dir.path())
        .timeout(LIMIT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["sandbox"], "network namespace (in a user namespace)",
        "{json}"
    );
    let tail = json["phases"][0]["stderr_tail"].as_str().unwrap();
    let (network, table) = tail.split_once("table: ").unwrap_or((tail, ""));
    assert_eq!(network, "interfaces: lo \nroutes: 0\n", "{json}");
    assert_own_table(table, &json.to_string());
}

/// The harness run with `args` where unshare(2) fails with EPERM, as under a container's
/// seccomp policy or without CAP_SYS_ADMIN and user namespaces: the filter is put on a thread of
/// its own (seccomp filters bind the thread that installs them and what it starts), which then
/// starts the harness, so neither the host's sysctls nor the other tests are touched.
fn run_refused(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
        let filter = SeccompFilter::new(
            [(libc::SYS_unshare, vec![])].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            std::env::consts::ARCH
                .try_into()
                .expect("an architecture seccompiler knows"),
        )
        .unwrap();
        let program: BpfProgram = filter.try_into().unwrap();
        seccompiler::apply_filter(&program).unwrap();
        assert_cmd::Command::new(harness_bin())
            .args(&args)
            .timeout(LIMIT)
            .output()
            .unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn on_where_namespaces_are_refused_exits_3_naming_the_missing_capability() {
    let out = run_refused(&["--sandbox", "on", "--only", "echo/single"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, b"", "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tcpproxy-test: --sandbox on: cannot make a network namespace: CAP_SYS_ADMIN is missing (unshare(CLONE_NEWNET): EPERM"),
        "{stderr}"
    );
    assert!(
        stderr.contains("user namespaces are not allowed here"),
        "{stderr}"
    );

    // The subcommands take the same flag the same way.
    for sub in [
        &["fuzz", "--sandbox", "on", "--cases", "1"][..],
        &[
            "grade",
            "--sandbox",
            "on",
            "--out-dir",
            "/nonexistent/never-made",
            "./none",
        ][..],
    ] {
        let out = run_refused(sub);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{sub:?}: {out:?}");
        assert!(
            stderr.starts_with(&format!(
                "tcpproxy-test {}: --sandbox on: cannot make a network namespace: CAP_SYS_ADMIN is missing",
                sub[0]
            )),
            "{stderr}"
        );
    }
}

#[test]
fn auto_where_namespaces_are_refused_runs_on_the_host_network_with_one_warning() {
    let out = run_refused(&[
        "--stall-timeout",
        "2",
        "--only",
        "echo/single",
        "--format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "tcpproxy-test: warning: running on the host's network, not in a network namespace of its own: cannot make a network namespace: CAP_SYS_ADMIN is missing (unshare(CLONE_NEWNET): EPERM: Operation not permitted), and no unprivileged user namespace can stand in: user namespaces are not allowed here (kernel.unprivileged_userns_clone=0, or a container's or seccomp policy) (unshare(CLONE_NEWUSER): EPERM: Operation not permitted) (--sandbox off says this is meant)"
        ],
        "{out:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = json["sandbox"].as_str().unwrap();
    assert!(
        said.starts_with("host network: cannot make a network namespace: "),
        "{said}"
    );
    assert_eq!(json["summary"]["passed"], 1, "{json}");
}

/// The one stderr line of the run that starts `tcpproxy-test: --network NAME: ` and holds `what`.
#[track_caller]
fn network_line<'a>(run: &'a Run, name: &str, what: &str) -> &'a str {
    let head = format!("tcpproxy-test: --network {name}: ");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with(&head) && l.contains(what))
        .collect();
    assert_eq!(lines.len(), 1, "one {what:?} line expected\n{}", run.dump());
    lines[0]
}

/// The number in `line` just before `unit`.
#[track_caller]
fn count_before(line: &str, unit: &str) -> u64 {
    let before = &line[..line
        .find(unit)
        .unwrap_or_else(|| panic!("no {unit:?} in {line}"))];
    let digits: String = before
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("{e}: no count before {unit:?} in {line}"))
}

/// The whole suite against the bundled reference under `--network NAME`, as JSON; it must pass
/// every phase, and the reports name the profile and its stretched scale.
fn reference_under(name: &str) -> Run {
    let _slot = HeavySlot::acquire();
    let run = run_harness(
        &[
            "--network",
            name,
            "--stall-timeout",
            "3",
            "--format",
            "json",
        ],
        Duration::from_secs(300),
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let json: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", run.dump()));
    assert_eq!(json["network"], name, "{}", run.dump());
    assert_eq!(json["sandbox"], "network namespace", "{}", run.dump());
    assert!(
        json["timeout_scale"].as_f64().unwrap() > 1.0,
        "the deadlines were not stretched\n{}",
        run.dump()
    );
    assert_eq!(json["summary"]["failed"], 0, "{}", run.dump());
    network_line(&run, name, "every deadline stretched x");
    assert_nothing_left(&run);
    run
}

#[test]
#[ignore = "slow lane: ci/slow, which .ci/run runs"]
fn the_reference_passes_every_phase_on_a_lossy_link_that_really_drops() {
    let run = reference_under("lossy");
    // Read back from the nftables rule's counter once the run is over.
    let line = network_line(&run, "lossy", "TCP packets dropped on lo");
    assert!(count_before(line, "TCP packets") > 0, "{}", run.dump());
}

#[test]
#[ignore = "slow lane: ci/slow, which .ci/run runs"]
fn the_reference_passes_every_phase_on_a_slow_link_that_really_queues() {
    let run = reference_under("slow");
    // Read back from tc's statistics of the tbf on lo: segments waited for tokens.
    let line = network_line(&run, "slow", "bytes through lo's queue");
    assert!(count_before(line, "bytes through") > 0, "{}", run.dump());
    assert!(count_before(line, "times") > 0, "{}", run.dump());
    // Its queue is long enough that nothing is tail-dropped (a lost RST is never resent).
    assert_eq!(count_before(line, "segments dropped"), 0, "{}", run.dump());
}

#[test]
fn an_impaired_link_is_refused_on_the_host_s_network() {
    for profile in ["lossy", "slow", "delay"] {
        let run = run_harness(
            &[
                "--sandbox",
                "off",
                "--network",
                profile,
                "--only",
                "echo/single",
            ],
            LIMIT,
        );
        assert_eq!(run.code, Some(3), "{}", run.dump());
        assert_eq!(run.stdout, "", "{}", run.dump());
        let line = network_line(&run, profile, "host's network");
        assert_eq!(
            line,
            format!(
                "tcpproxy-test: --network {profile}: impairs loopback only inside the run's own network namespace, and this run would be on the host's network (--sandbox off); the host's own loopback is never impaired"
            )
        );
    }
    // Where the namespace is refused, `auto` falls back to the host: the profile is refused too,
    // and in one line, not after the fallback's warning.
    let out = run_refused(&["--network", "lossy", "--only", "echo/single"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("network")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("tcpproxy-test: --network lossy: impairs loopback only inside the run's own network namespace, and this run would be on the host's network (cannot make a network namespace: "),
        "{stderr}"
    );
}

/// A user namespace maps the harness's user to itself, so nft and tc, which it starts, hold no
/// capability over the namespace: the profile is refused there, in one line saying so.
#[test]
fn an_impaired_link_is_refused_inside_a_user_namespace() {
    if !nix::unistd::getuid().is_root() {
        // Unprivileged already: the harness's namespace is a user namespace's.
        let run = run_harness(&["--network", "slow", "--only", "echo/single"], LIMIT);
        assert_eq!(run.code, Some(3), "{}", run.dump());
        network_line(&run, "slow", "run as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    // As in an_unprivileged_harness_makes_its_namespace_inside_a_user_namespace: a copy nobody
    // can run.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let harness = dir.path().join("tcpproxy-test");
    std::fs::copy(harness_bin(), &harness).unwrap();
    let out = assert_cmd::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&harness)
        .args(["--network", "lossy", "--only", "echo/single"])
        .current_dir(dir.path())
        .timeout(LIMIT)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, b"", "{out:?}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("tcpproxy-test: --network"))
        .collect();
    assert_eq!(
        lines,
        [
            "tcpproxy-test: --network lossy: needs nft run with CAP_NET_ADMIN over the run's network namespace, which a user namespace mapping user 65534 to itself does not give to a program it starts; run as root"
        ],
        "{stderr}"
    );
}

#[test]
fn delay_runs_only_where_the_kernel_has_netem() {
    let run = run_harness(
        &[
            "--network",
            "delay",
            "--only",
            "echo/single",
            "--format",
            "json",
        ],
        LIMIT,
    );
    if run.code == Some(3) {
        // This host (its kernel has no sch_netem): refused in one line saying so.
        assert_eq!(run.stdout, "", "{}", run.dump());
        let line = network_line(&run, "delay", "netem");
        assert!(
            line.contains("this kernel has no netem (sch_netem), which delay needs")
                && line.contains("Specified qdisc kind is unknown"),
            "{}",
            run.dump()
        );
    } else {
        assert_eq!(run.code, Some(0), "{}", run.dump());
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["network"], "delay", "{}", run.dump());
    }
}

/// A stand-in proxy that lists its open descriptors on stderr, then exits.
const DESCRIPTOR_REPORTER: &str = "#!/bin/sh
for f in /proc/$$/fd/*; do echo \"fd ${f##*/}: $(readlink \"$f\")\"; done >&2
exit 7
";

/// A descriptor the harness inherited (a CI runner's, a build's jobserver pipe) is not the
/// untrusted proxy's: it gets standard input, output and error, and its own.
#[test]
fn the_proxy_inherits_no_descriptor_of_the_harness_s() {
    use std::os::fd::AsFd as _;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("inherited-by-the-harness");
    let inherited = std::fs::File::create(&marker).unwrap();
    // Open across exec, as a runner's descriptor is: the harness this test starts inherits it.
    nix::fcntl::fcntl(
        inherited.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let (_, _, tail) = stand_in("auto", DESCRIPTOR_REPORTER);
    drop(inherited);
    assert!(tail.contains("fd 0: "), "no listing: {tail}");
    assert!(
        !tail.contains(marker.to_str().unwrap()),
        "the proxy inherited the harness's descriptor: {tail}"
    );
}
