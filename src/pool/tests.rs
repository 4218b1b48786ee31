//! Tables of (state, input) -> expected actions, for each decision the scheduler makes.

use std::time::Duration;

use super::*;
use crate::session::Failure;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn drain(pool: &mut Scheduler, now: Duration) -> Vec<Action> {
    std::iter::from_fn(|| pool.poll_action(now)).collect()
}

fn dispatch(job: u64, server: usize, attempt: u32) -> Action {
    Action::Dispatch {
        job: JobId(job),
        server: ServerId(server),
        attempt,
    }
}

fn lookup(job: u64, server: usize, attempt: u32) -> Action {
    Action::Lookup {
        job: JobId(job),
        server: ServerId(server),
        attempt,
    }
}

fn succeeded(job: u64, server: usize, attempt: u32) -> Action {
    Action::Finished {
        job: JobId(job),
        outcome: JobOutcome::Succeeded {
            server: ServerId(server),
            attempt,
        },
    }
}

/// A pool with one job dispatched to server 0 as attempt 1.
fn one_job(servers: usize) -> Scheduler {
    one_job_with(servers, PoolConfig::default())
}

fn one_job_with(servers: usize, config: PoolConfig) -> Scheduler {
    let mut pool = Scheduler::new(servers, config);
    pool.submit(Duration::ZERO, JobId(1)).unwrap();
    assert_eq!(drain(&mut pool, Duration::ZERO), [dispatch(1, 0, 1)]);
    pool
}

#[test]
fn breaker_transitions() {
    #[derive(Debug, Clone, Copy)]
    enum In {
        Error,
        HealthOk,
        HealthErr,
        /// Advance to the breaker's timer and fire it.
        Timer,
    }
    use BreakerState::{Closed, HalfOpen, Open};
    use In::*;
    // Inputs, the state after each, and the open backoff in force at the end (if open).
    let table: &[(&[In], &[BreakerState], Option<u64>)] = &[
        (&[Error], &[Closed], None),
        (&[Error, Error], &[Closed, Open], Some(1)),
        // A passing health check does not clear failures: only a job's success does.
        (&[Error, HealthOk, Error], &[Closed, Closed, Open], Some(1)),
        (
            &[Error, Error, Error, HealthOk],
            &[Closed, Open, Open, Open],
            Some(1),
        ),
        (&[Error, Error, Timer], &[Closed, Open, HalfOpen], None),
        (
            &[Error, Error, Timer, HealthOk],
            &[Closed, Open, HalfOpen, Closed],
            None,
        ),
        (
            &[Error, Error, Timer, HealthErr],
            &[Closed, Open, HalfOpen, Open],
            Some(2),
        ),
        (
            &[Error, Error, Timer, Error],
            &[Closed, Open, HalfOpen, Open],
            Some(2),
        ),
        (
            &[Error, Error, Timer, HealthErr, Timer, HealthErr],
            &[Closed, Open, HalfOpen, Open, HalfOpen, Open],
            Some(4),
        ),
        (
            &[Error, Error, Timer, HealthOk, Error, Error],
            &[Closed, Open, HalfOpen, Closed, Closed, Open],
            Some(1),
        ),
        (&[HealthErr, HealthErr], &[Closed, Open], Some(1)),
    ];
    for (inputs, states, backoff) in table {
        let mut pool = Scheduler::new(1, PoolConfig::default());
        let mut now = Duration::ZERO;
        let mut seen = Vec::new();
        for input in *inputs {
            match input {
                Error => pool.handle_server_error(now, ServerId(0), "reset").unwrap(),
                HealthOk => pool.handle_health(now, ServerId(0), Ok(())).unwrap(),
                HealthErr => pool
                    .handle_health(now, ServerId(0), Err(unhealthy("503")))
                    .unwrap(),
                Timer => {
                    now = pool.poll_timeout().unwrap();
                    pool.handle_timeout(now);
                    let probe = drain(&mut pool, now);
                    assert_eq!(
                        probe,
                        [Action::HealthCheck {
                            server: ServerId(0)
                        }]
                    );
                }
            }
            seen.push(pool.stats().servers[0].state);
        }
        assert_eq!(&seen, states, "{inputs:?}");
        let open_for = pool.poll_timeout().map(|t| (t - now).as_secs());
        assert_eq!(open_for, *backoff, "{inputs:?}");
    }
}

#[test]
fn server_choice() {
    // (external load per server, mean job time in ms per server, server to avoid) -> choice
    type Row<'a> = (&'a [u64], &'a [Option<u64>], Option<usize>, Option<usize>);
    let table: &[Row] = &[
        (&[0, 0, 0], &[None, None, None], None, Some(0)),
        (&[1, 0, 0], &[None, None, None], None, Some(1)),
        (&[0, 0, 0], &[Some(90), Some(50), Some(70)], None, Some(1)),
        (&[0, 0, 0], &[Some(50), Some(50), None], None, Some(2)),
        (&[0, 1, 0], &[Some(90), Some(50), Some(70)], None, Some(2)),
        (
            &[0, 0, 0],
            &[Some(90), Some(50), Some(70)],
            Some(1),
            Some(2),
        ),
        (&[0], &[None], Some(0), Some(0)),
        (&[5, 0], &[None, None], Some(1), Some(0)),
    ];
    for (external, ewma, avoid, expected) in table {
        let mut pool = Scheduler::new(external.len(), PoolConfig::default());
        for (i, s) in pool.servers.iter_mut().enumerate() {
            s.external = external[i];
            s.ewma = ewma[i].map(ms);
        }
        assert_eq!(
            pool.pick_server(*avoid),
            *expected,
            "{external:?} {ewma:?} {avoid:?}"
        );
    }
    // A full or out-of-service server is never chosen.
    let mut pool = Scheduler::new(2, PoolConfig::default());
    pool.servers[0].reserved = 2;
    pool.servers[1].breaker = Breaker::HalfOpen { backoff: secs(1) };
    assert_eq!(pool.pick_server(None), None);
}

#[test]
fn misuse_is_a_typed_error() {
    let mut pool = one_job(2);
    let now = Duration::ZERO;
    let job = JobId(1);
    let unknown_server = Err(PoolMisuse::UnknownServer(ServerId(2)));
    assert_eq!(pool.submit(now, job), Err(PoolMisuse::DuplicateJob(job)));
    assert_eq!(
        pool.handle_server_error(now, ServerId(2), "x"),
        unknown_server
    );
    assert_eq!(pool.handle_health(now, ServerId(2), Ok(())), unknown_server);
    assert_eq!(pool.handle_queue_status(ServerId(2), 1), unknown_server);
    for attempt in [0, 2] {
        let e = Err(PoolMisuse::UnknownAttempt { job, attempt });
        assert_eq!(pool.handle_accepted(now, job, attempt), e);
        assert_eq!(pool.handle_started(now, job, attempt), e);
        assert_eq!(pool.handle_result(now, job, attempt, JobResult::Success), e);
        assert_eq!(pool.handle_lookup(now, job, attempt, Lookup::Unknown), e);
        assert_eq!(pool.handle_steal(now, job, attempt, true), e);
    }
    assert_eq!(pool.handle_consumed(job), Err(PoolMisuse::NotFinished(job)));
    assert_eq!(
        pool.handle_consumed(JobId(9)),
        Err(PoolMisuse::UnknownJob(JobId(9)))
    );
    // Reports about jobs the pool does not hold are stale, not errors: they may be consumed.
    assert_eq!(
        pool.handle_result(now, JobId(9), 1, JobResult::Success),
        Ok(Handled::Stale)
    );
    let mut empty = Scheduler::new(0, PoolConfig::default());
    assert_eq!(empty.submit(now, job), Err(PoolMisuse::NoServers));
    // Nothing above changed the pool.
    assert_eq!(pool.stats().in_flight, 1);
    assert_eq!(drain(&mut pool, now), []);
}

#[test]
fn results() {
    let failed = |error: &str, attempts| Action::Finished {
        job: JobId(1),
        outcome: JobOutcome::Failed {
            error: error.into(),
            attempts,
        },
    };
    let table: Vec<(JobResult, Vec<Action>)> = vec![
        (JobResult::Success, vec![succeeded(1, 0, 1)]),
        (
            JobResult::failed(false, false, "node 3 raised"),
            vec![failed("node 3 raised", 1)],
        ),
        (
            JobResult::failed(false, true, "rejected"),
            vec![failed("rejected", 1)],
        ),
        (
            JobResult::failed(true, false, "lost outputs"),
            vec![dispatch(1, 1, 2)],
        ),
        (
            JobResult::failed(true, true, "websocket down"),
            vec![lookup(1, 0, 1)],
        ),
    ];
    for (result, expected) in table {
        let mut pool = one_job(2);
        let applied = pool.handle_result(ms(10), JobId(1), 1, result.clone());
        assert_eq!(applied, Ok(Handled::Applied));
        assert_eq!(drain(&mut pool, ms(10)), expected, "{result:?}");
    }
}

/// The abandoned attempt is cancelled on its server.
fn cancel(job: u64, server: usize, attempt: u32) -> Action {
    Action::Cancel {
        job: JobId(job),
        server: ServerId(server),
        attempt,
    }
}

#[test]
fn lookups() {
    // The answer, then what follows at once, and what follows one lookup interval later.
    let table: &[(Lookup, &[Action], &[Action])] = &[
        (Lookup::Finished { ok: true }, &[succeeded(1, 0, 1)], &[]),
        (
            Lookup::Finished { ok: false },
            &[cancel(1, 0, 1), dispatch(1, 1, 2)],
            &[],
        ),
        (Lookup::Unknown, &[cancel(1, 0, 1), dispatch(1, 1, 2)], &[]),
        (Lookup::Pending, &[], &[lookup(1, 0, 1)]),
        (Lookup::Unreachable, &[], &[lookup(1, 0, 1)]),
    ];
    // Breakers stay closed here: a failed lookup is a server failure too.
    let config = PoolConfig {
        failure_threshold: 3,
        ..PoolConfig::default()
    };
    for (answer, at_once, later) in table {
        let mut pool = one_job_with(2, config.clone());
        let result = JobResult::failed(true, true, "websocket down");
        pool.handle_result(ms(10), JobId(1), 1, result).unwrap();
        assert_eq!(drain(&mut pool, ms(10)), [lookup(1, 0, 1)]);
        let applied = pool.handle_lookup(ms(20), JobId(1), 1, *answer);
        assert_eq!(applied, Ok(Handled::Applied));
        assert_eq!(drain(&mut pool, ms(20)), *at_once, "{answer:?}");
        let next = ms(1020);
        if later.is_empty() {
            assert_eq!(pool.poll_timeout(), None, "{answer:?}");
        } else {
            assert_eq!(pool.poll_timeout(), Some(next), "{answer:?}");
        }
        pool.handle_timeout(next);
        assert_eq!(drain(&mut pool, next), *later, "{answer:?}");
    }
}

#[test]
fn the_budget_ends_a_job_with_its_last_error() {
    let mut pool = one_job(3);
    let mut now = Duration::ZERO;
    for attempt in 1..=3 {
        now += secs(1);
        let error = format!("failure {attempt}");
        let result = JobResult::failed(true, false, error);
        pool.handle_result(now, JobId(1), attempt, result).unwrap();
        let actions = drain(&mut pool, now);
        if attempt < 3 {
            // Each retry avoids the server that just failed it (0, then 1).
            let next = [1, 0][attempt as usize - 1];
            assert_eq!(actions, [dispatch(1, next, attempt + 1)]);
        } else {
            let outcome = JobOutcome::Failed {
                error: "failure 3".into(),
                attempts: 3,
            };
            let job = JobId(1);
            assert_eq!(actions, [Action::Finished { job, outcome }]);
        }
    }
    assert!(pool.is_idle());
}

#[test]
fn an_unanswered_lookup_is_given_up_on() {
    let mut pool = one_job(2);
    let result = JobResult::failed(true, true, "websocket down");
    pool.handle_result(ms(0), JobId(1), 1, result).unwrap();
    assert_eq!(drain(&mut pool, ms(0)), [lookup(1, 0, 1)]);
    assert_eq!(pool.poll_timeout(), Some(secs(30)));
    pool.handle_timeout(secs(30));
    let cancel = Action::Cancel {
        job: JobId(1),
        server: ServerId(0),
        attempt: 1,
    };
    assert_eq!(drain(&mut pool, secs(30)), [cancel, dispatch(1, 1, 2)]);
}

#[test]
fn a_server_taken_out_has_its_jobs_looked_up_when_back() {
    let mut pool = Scheduler::new(1, PoolConfig::default());
    let now = Duration::ZERO;
    pool.submit(now, JobId(1)).unwrap();
    pool.submit(now, JobId(2)).unwrap();
    assert_eq!(
        drain(&mut pool, now),
        [dispatch(1, 0, 1), dispatch(2, 0, 1)]
    );
    pool.handle_server_error(now, ServerId(0), "reset").unwrap();
    pool.handle_server_error(now, ServerId(0), "reset").unwrap();
    assert_eq!(drain(&mut pool, now), []);
    pool.handle_timeout(secs(1));
    let probe = Action::HealthCheck {
        server: ServerId(0),
    };
    assert_eq!(drain(&mut pool, secs(1)), [probe]);
    pool.handle_health(secs(1), ServerId(0), Ok(())).unwrap();
    assert_eq!(
        drain(&mut pool, secs(1)),
        [lookup(1, 0, 1), lookup(2, 0, 1)]
    );
    // Its result arrives after all: the current attempt, so it counts.
    let late = pool.handle_result(secs(2), JobId(1), 1, JobResult::Success);
    assert_eq!(late, Ok(Handled::Applied));
    assert_eq!(drain(&mut pool, secs(2)), [succeeded(1, 0, 1)]);
    let answer = pool.handle_lookup(secs(2), JobId(1), 1, Lookup::Unknown);
    assert_eq!(answer, Ok(Handled::Stale));
}

/// Two servers, fast (0) and slow (1), measured; job 1 waits unstarted on the slow one.
fn steal_setup(steal: bool) -> Scheduler {
    let config = PoolConfig {
        steal,
        ..PoolConfig::default()
    };
    let mut pool = Scheduler::new(2, config);
    pool.servers[0].ewma = Some(ms(50));
    pool.servers[1].ewma = Some(ms(200));
    pool.servers[0].reserved = 2; // keep the fast one full while dispatching
    for n in [1, 2] {
        pool.submit(ms(0), JobId(n)).unwrap();
    }
    assert_eq!(
        drain(&mut pool, ms(0)),
        [dispatch(1, 1, 1), dispatch(2, 1, 1)]
    );
    pool.handle_started(ms(0), JobId(1), 1).unwrap();
    pool.servers[0].reserved = 0;
    pool
}

#[test]
fn steals() {
    let steal = Action::Steal {
        job: JobId(2),
        server: ServerId(1),
        attempt: 1,
        to: ServerId(0),
    };
    // Off: nothing moves.
    let mut pool = steal_setup(false);
    assert_eq!(drain(&mut pool, ms(10)), []);

    // Refused (it had started): it stays, and is not asked for again.
    let mut pool = steal_setup(true);
    assert_eq!(drain(&mut pool, ms(10)), std::slice::from_ref(&steal));
    assert_eq!(
        pool.handle_steal(ms(10), JobId(2), 1, false),
        Ok(Handled::Applied)
    );
    assert_eq!(drain(&mut pool, ms(10)), []);
    assert_eq!(pool.servers[0].reserved, 0);

    // Taken: it runs on the fast server as a new attempt; the old one is stale.
    let mut pool = steal_setup(true);
    assert_eq!(drain(&mut pool, ms(10)), std::slice::from_ref(&steal));
    assert_eq!(pool.servers[0].occupied(), 1, "a slot is held for it");
    pool.handle_steal(ms(12), JobId(2), 1, true).unwrap();
    assert_eq!(drain(&mut pool, ms(12)), [dispatch(2, 0, 2)]);
    let old = pool.handle_result(ms(30), JobId(2), 1, JobResult::Success);
    assert_eq!(old, Ok(Handled::Stale));
    assert_eq!(pool.stats().servers[1].stolen, 1);
    pool.handle_result(ms(70), JobId(2), 2, JobResult::Success)
        .unwrap();
    assert_eq!(drain(&mut pool, ms(70)), [succeeded(2, 0, 2)]);
    // A steal never counts against the budget.
    assert_eq!(pool.jobs[&JobId(2)].failures, 0);

    // Its server is taken out before the answer: the slot held is freed; taken back, the job
    // is known not to run there and goes out again without a lookup.
    let mut pool = steal_setup(true);
    assert_eq!(drain(&mut pool, ms(10)), std::slice::from_ref(&steal));
    for _ in 0..2 {
        pool.handle_server_error(ms(11), ServerId(1), "reset")
            .unwrap();
    }
    assert_eq!(pool.servers[0].reserved, 0);
    let answer = pool.handle_steal(ms(12), JobId(2), 1, true);
    assert_eq!(answer, Ok(Handled::Applied));
    assert_eq!(drain(&mut pool, ms(12)), [dispatch(2, 0, 2)]);
    assert_eq!(pool.jobs[&JobId(2)].failures, 0);

    // The job's result arrives before the answer: the steal is void, the slot freed.
    let mut pool = steal_setup(true);
    assert_eq!(drain(&mut pool, ms(10)), [steal]);
    pool.handle_result(ms(11), JobId(2), 1, JobResult::Success)
        .unwrap();
    assert_eq!(pool.servers[0].reserved, 0);
    let answer = pool.handle_steal(ms(12), JobId(2), 1, true);
    assert_eq!(answer, Ok(Handled::Stale));
    assert_eq!(drain(&mut pool, ms(12)), [succeeded(2, 1, 1)]);
}

#[test]
fn other_clients_load_steers_dispatch() {
    let mut pool = Scheduler::new(2, PoolConfig::default());
    pool.handle_queue_status(ServerId(0), 3).unwrap();
    pool.submit(ms(0), JobId(1)).unwrap();
    pool.submit(ms(0), JobId(2)).unwrap();
    pool.submit(ms(0), JobId(3)).unwrap();
    assert_eq!(
        drain(&mut pool, ms(0)),
        [dispatch(1, 1, 1), dispatch(2, 1, 1), dispatch(3, 0, 1)]
    );
    // Our own prompts in its queue are not other clients' load.
    pool.handle_queue_status(ServerId(1), 2).unwrap();
    assert_eq!(pool.stats().servers[1].external_load, 0);
    pool.handle_queue_status(ServerId(0), 2).unwrap();
    assert_eq!(pool.stats().servers[0].external_load, 1);
}

#[test]
fn periodic_health_checks() {
    let config = PoolConfig {
        health_interval: Some(secs(10)),
        ..PoolConfig::default()
    };
    let mut pool = Scheduler::new(2, config);
    assert_eq!(drain(&mut pool, secs(5)), []);
    assert_eq!(pool.poll_timeout(), Some(secs(15)));
    pool.handle_timeout(secs(15));
    let check = |s| Action::HealthCheck {
        server: ServerId(s),
    };
    assert_eq!(drain(&mut pool, secs(15)), [check(0), check(1)]);
    // Unanswered: not asked twice.
    pool.handle_timeout(secs(25));
    assert_eq!(drain(&mut pool, secs(25)), []);
    pool.handle_health(secs(26), ServerId(0), Err(unhealthy("500")))
        .unwrap();
    pool.handle_health(secs(26), ServerId(1), Ok(())).unwrap();
    pool.handle_timeout(secs(35));
    assert_eq!(drain(&mut pool, secs(35)), [check(0), check(1)]);
    pool.handle_health(secs(36), ServerId(0), Err(unhealthy("500")))
        .unwrap();
    assert_eq!(pool.stats().servers[0].state, BreakerState::Open);
}

#[test]
fn spurious_timeouts_do_nothing() {
    let mut pool = one_job(2);
    for t in [0, 1, 999, 5_000, 60_000] {
        pool.handle_timeout(ms(t));
        assert_eq!(pool.poll_timeout(), None);
    }
    assert_eq!(drain(&mut pool, ms(60_000)), []);
    assert_eq!(pool.stats().in_flight, 1);
}

#[test]
fn session_failures_map_to_results() {
    use crate::session::Failure as F;
    let table: Vec<(Failure, bool, bool)> = vec![
        (F::NotOnServer, true, false),
        (F::Disconnected { attempts: 8 }, true, true),
        (
            F::Transport {
                context: "POST /prompt",
                error: crate::TransportError::new(crate::TransportErrorKind::Reset, "POST /prompt"),
            },
            true,
            true,
        ),
        (F::LostOutputs { nodes: vec![] }, true, false),
    ];
    for (failure, retryable, uncertain) in table {
        let expected = JobResult::failed(retryable, uncertain, failure.to_string());
        assert_eq!(JobResult::from_failure(&failure), expected);
    }
}

// Scenarios through the public API.

#[test]
fn breaker_reopens_with_doubled_backoff_then_closes() {
    let mut pool = Scheduler::new(2, PoolConfig::default());
    let (s0, mut now) = (ServerId(0), Duration::ZERO);
    let state = |pool: &Scheduler| pool.stats().servers[0].state;
    pool.handle_server_error(now, s0, "refused").unwrap();
    assert_eq!(state(&pool), BreakerState::Closed);
    pool.handle_server_error(now, s0, "refused").unwrap();
    assert_eq!(state(&pool), BreakerState::Open);
    let mut delays = Vec::new();
    for _ in 0..8 {
        let at = pool.poll_timeout().expect("the breaker has a timer");
        delays.push((at - now).as_secs());
        now = at;
        pool.handle_timeout(now);
        assert_eq!(state(&pool), BreakerState::HalfOpen);
        assert_eq!(drain(&mut pool, now), [Action::HealthCheck { server: s0 }]);
        pool.handle_health(now, s0, Err(unhealthy("503"))).unwrap();
        assert_eq!(state(&pool), BreakerState::Open);
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    now = pool.poll_timeout().unwrap();
    pool.handle_timeout(now);
    assert_eq!(drain(&mut pool, now), [Action::HealthCheck { server: s0 }]);
    pool.handle_health(now, s0, Ok(())).unwrap();
    assert_eq!(state(&pool), BreakerState::Closed);
    assert_eq!(pool.poll_timeout(), None);
}

#[test]
fn retry_prefers_another_server() {
    let mut pool = Scheduler::new(3, PoolConfig::default());
    let now = Duration::ZERO;
    pool.submit(now, JobId(1)).unwrap();
    assert_eq!(drain(&mut pool, now), [dispatch(1, 0, 1)]);
    let lost = JobResult::failed(true, false, "lost outputs");
    pool.handle_result(now, JobId(1), 1, lost).unwrap();
    // Server 0 is the least loaded and first, but it just failed the job.
    assert_eq!(drain(&mut pool, now), [dispatch(1, 1, 2)]);
}

#[test]
fn slow_consumer_holds_dispatch_back() {
    let config = PoolConfig {
        max_unconsumed: Some(3),
        ..PoolConfig::default()
    };
    let mut pool = Scheduler::new(1, config);
    let now = Duration::ZERO;
    for n in 0..10 {
        pool.submit(now, JobId(n)).unwrap();
    }
    assert_eq!(
        drain(&mut pool, now),
        [dispatch(0, 0, 1), dispatch(1, 0, 1)]
    );
    assert!(!pool.waits_on_consumer(), "nothing to read yet");
    pool.handle_result(now, JobId(0), 1, JobResult::Success)
        .unwrap();
    assert!(
        !pool.waits_on_consumer(),
        "one unread, one in flight, room for one more: reading it changes nothing now"
    );
    pool.handle_result(now, JobId(1), 1, JobResult::Success)
        .unwrap();
    // Two finished and unconsumed: one more may be in flight, no more.
    let actions = drain(&mut pool, now);
    let expected = [succeeded(0, 0, 1), succeeded(1, 0, 1), dispatch(2, 0, 1)];
    assert_eq!(actions, expected);
    assert!(
        pool.waits_on_consumer(),
        "jobs wait for room under the limit"
    );
    pool.handle_result(now, JobId(2), 1, JobResult::Success)
        .unwrap();
    assert_eq!(drain(&mut pool, now), [succeeded(2, 0, 1)]);
    assert_eq!(pool.stats().unconsumed, 3);
    pool.handle_consumed(JobId(0)).unwrap();
    assert_eq!(drain(&mut pool, now), [dispatch(3, 0, 1)]);
    assert_eq!(pool.stats().unconsumed + pool.stats().in_flight, 3);
    // Job 3 runs; once it ends, nothing is in flight and only the consumer can move the pool.
    pool.handle_result(now, JobId(3), 1, JobResult::Success)
        .unwrap();
    assert_eq!(drain(&mut pool, now), [succeeded(3, 0, 1)]);
    assert_eq!(pool.stats().in_flight, 0);
    assert!(
        pool.waits_on_consumer(),
        "nothing in flight, reports unread"
    );
}

#[test]
fn eligible_servers_only_and_no_head_of_line_blocking() {
    let now = Duration::ZERO;
    let mut pool = Scheduler::new(
        2,
        PoolConfig {
            per_server: 1,
            ..PoolConfig::default()
        },
    );
    // Job 0 can only run on server 1, job 1 anywhere, job 2 only on server 1.
    for n in 0..3 {
        pool.submit(now, JobId(n)).unwrap();
    }
    pool.set_eligible(JobId(0), &[ServerId(1)]).unwrap();
    pool.set_eligible(JobId(2), &[ServerId(1)]).unwrap();
    assert_eq!(pool.set_eligible(JobId(1), &[]), Err(PoolMisuse::NoServers));
    assert_eq!(
        pool.set_eligible(JobId(1), &[ServerId(7)]),
        Err(PoolMisuse::UnknownServer(ServerId(7)))
    );
    let mut dispatched = Vec::new();
    while let Some(a) = pool.poll_action(now) {
        if let Action::Dispatch { job, server, .. } = a {
            dispatched.push((job.0, server.0));
        }
    }
    // Job 0 takes server 1; job 2 waits for it; job 1 is not held up behind job 2.
    assert_eq!(dispatched, [(0, 1), (1, 0)]);
    pool.handle_result(now, JobId(1), 1, JobResult::Success)
        .unwrap();
    let mut later = Vec::new();
    while let Some(a) = pool.poll_action(now) {
        if let Action::Dispatch { job, server, .. } = a {
            later.push((job.0, server.0));
        }
    }
    assert!(
        later.is_empty(),
        "server 0 is free but job 2 cannot run there: {later:?}"
    );
    pool.handle_result(now, JobId(0), 1, JobResult::Success)
        .unwrap();
    while let Some(a) = pool.poll_action(now) {
        if let Action::Dispatch { job, server, .. } = a {
            later.push((job.0, server.0));
        }
    }
    assert_eq!(later, [(2, 1)]);
}

#[test]
fn lookup_verdicts_from_history_and_queue() {
    use crate::wire::HttpResponse;
    use crate::wire::http::{decode_history, decode_queue};
    let id = crate::PromptId::from("p");
    let entry = |status: &str| {
        let body = format!(
            r#"{{"p":{{"prompt":[1,"p",{{}},{{}},[]],"outputs":{{}},"status":{{"status_str":"{status}","completed":{},"messages":[]}},"meta":{{}}}}}}"#,
            status == "success"
        );
        decode_history(&HttpResponse::new(200, body), &id)
            .unwrap()
            .unwrap()
    };
    let files_only =
        crate::Workflow::from_json(r#"{"1":{"class_type":"SaveImage","inputs":{}}}"#).unwrap();
    let ws = crate::Workflow::from_json(r#"{"1":{"class_type":"SaveImageWebsocket","inputs":{}}}"#)
        .unwrap();
    assert_eq!(
        Lookup::from_history(&entry("success"), &files_only),
        Lookup::Finished { ok: true }
    );
    assert_eq!(
        Lookup::from_history(&entry("error"), &files_only),
        Lookup::Finished { ok: false }
    );
    // Websocket-only images were sent to nobody: the run must happen again.
    assert_eq!(
        Lookup::from_history(&entry("success"), &ws),
        Lookup::Finished { ok: false }
    );
    let queue = |json: &str| decode_queue(&HttpResponse::new(200, json.to_owned())).unwrap();
    assert_eq!(
        Lookup::from_queue(
            &queue(r#"{"queue_running":[],"queue_pending":[[1,"p",{},{},[]]]}"#),
            &id
        ),
        Lookup::Pending
    );
    assert_eq!(
        Lookup::from_queue(&queue(r#"{"queue_running":[],"queue_pending":[]}"#), &id),
        Lookup::Unknown
    );
}

/// A failed health check: the server answered `/system_stats` with this status.
fn unhealthy(status: &str) -> crate::error::ExchangeError {
    crate::error::ExchangeError::Protocol(crate::ProtocolError::UnexpectedStatus {
        context: "/system_stats",
        status: status.parse().unwrap_or(500),
        body: String::new(),
    })
}
