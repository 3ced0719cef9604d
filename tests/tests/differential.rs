//! Differential suite: every bootstrap in `tests/configs/diff/` on Envoy and remora, same requests,
//! same answers — and both equal to the expectations written next to each fixture.
//!
//! Switches: `REMORA_DIFF_ORACLE_ONLY=1` runs Envoy alone against the expectations (to check the
//! fixtures); `REMORA_TEST_PROXY=remora` runs remora alone; `REMORA_DIFF_FILTER=substr` picks
//! fixtures; `REMORA_DIFF_DUMP=1` prints every observation.

use std::sync::Arc;

use remora_tests::diff::{self, Fixture, FixtureRun};
use remora_tests::{fixture_path, select, Kind};

/// Fixtures run side by side; each one starts one proxy at a time.
const PARALLEL_FIXTURES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential() {
    let kinds = select::diff_kinds();
    if kinds.is_empty() {
        return;
    }
    let filter = std::env::var("REMORA_DIFF_FILTER").unwrap_or_default();
    let fixtures: Vec<Fixture> = diff::load_all(&fixture_path("diff"))
        .into_iter()
        .filter(|f| f.name.contains(&filter))
        .collect();
    assert!(
        !fixtures.is_empty(),
        "no fixture matches REMORA_DIFF_FILTER={filter:?}"
    );

    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_FIXTURES));
    let mut tasks = Vec::new();
    for fixture in fixtures.iter().cloned() {
        let kinds = kinds.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            run_one(fixture, kinds).await
        }));
    }
    let mut problems = Vec::new();
    let mut requests = 0;
    for (fixture, task) in fixtures.iter().zip(tasks) {
        let (lines, sent) = task.await.expect("fixture task");
        requests += sent;
        let verdict = if lines.is_empty() {
            "ok".to_string()
        } else {
            format!("{} problems", lines.len())
        };
        println!(
            "fixture {}: {} cases on {:?}: {verdict}",
            fixture.name,
            fixture.cases.cases.len() + fixture.cases.tcp_cases.len(),
            kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
        );
        problems.extend(lines);
    }
    println!(
        "differential: {} fixtures, {requests} requests compared",
        fixtures.len()
    );
    assert!(
        problems.is_empty(),
        "{} differential problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Run one fixture on every kind; the problem lines and the number of requests sent.
async fn run_one(fixture: Fixture, kinds: Vec<Kind>) -> (Vec<String>, usize) {
    let fixture = Arc::new(fixture);
    let mut runs: Vec<FixtureRun> = Vec::new();
    let mut problems = Vec::new();
    let mut sent = 0;
    for kind in kinds {
        let f = fixture.clone();
        // A proxy that cannot start panics inside the harness; keep the other kind's verdicts.
        match tokio::spawn(async move { diff::run_fixture(kind, &f).await }).await {
            Ok(run) => {
                sent += fixture.request_count();
                if std::env::var_os("REMORA_DIFF_DUMP").is_some() {
                    dump(&fixture, &run);
                }
                problems.extend(diff::check_expectations(&fixture, &run));
                runs.push(run);
            }
            Err(e) => problems.push(format!(
                "[{kind}] {}: did not run: {}",
                fixture.name,
                panic_text(e)
            )),
        }
    }
    if let [a, b] = runs.as_slice() {
        problems.extend(diff::compare(&fixture, a, b));
    }
    (problems, sent)
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}

fn dump(fixture: &Fixture, run: &FixtureRun) {
    for (case, obs) in fixture.cases.cases.iter().zip(&run.http) {
        println!(
            "DUMP [{}] {} / {}: status={} error={:?} resp_headers={:?} body={:?} echo={:?} shares={:?}",
            run.kind,
            fixture.name,
            case.name,
            obs.status,
            obs.error,
            obs.response_headers,
            if obs.echo.is_some() { "<echo>" } else { obs.body.as_str() },
            obs.echo,
            obs.shares
        );
    }
    for (case, obs) in fixture.cases.tcp_cases.iter().zip(&run.tcp) {
        println!(
            "DUMP [{}] {} / {}: {obs:?}",
            run.kind, fixture.name, case.name
        );
    }
}
