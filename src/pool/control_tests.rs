//! Priority, cancelling one job, statistics and closing, in simulated time.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::session::{Event, Image};
use crate::wire::ImageFormat;
use crate::{PromptId, ServerAddress, Workflow};

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn machine(servers: usize) -> Pool {
    let addresses = (0..servers)
        .map(|i| ServerAddress::parse(&format!("127.0.0.1:{}", 9100 + i)).unwrap())
        .collect();
    let mut settings = PoolSettings::default();
    settings.scheduler.per_server = 1;
    Pool::new(addresses, settings, 11)
}

fn graph() -> Workflow {
    Workflow::from_value(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }))
    .unwrap()
}

/// The prompts submitted: (server, job, prompt, posted in front).
fn submits(pool: &mut Pool) -> Vec<(usize, JobId, PromptId, bool)> {
    std::iter::from_fn(|| pool.poll_io())
        .filter_map(|io| match io {
            Io::Submit {
                server,
                job,
                submission,
                ..
            } => Some((server.0, job, submission.prompt_id, submission.front)),
            _ => None,
        })
        .collect()
}

fn reports(pool: &mut Pool, now: Duration) -> Vec<JobReport> {
    let mut out = Vec::new();
    while let Some(e) = pool.poll_event() {
        if let PoolEvent::Finished(r) = e {
            pool.handle_consumed(now, r.job);
            out.push(r);
        }
    }
    out
}

fn submit(pool: &mut Pool, now: Duration, n: u64, front: bool) {
    let options = if front {
        JobOptions::new().in_front()
    } else {
        JobOptions::new()
    };
    pool.submit_with(now, JobId(n), graph(), options).unwrap();
}

#[test]
fn a_job_with_priority_goes_ahead_of_the_queue_and_of_its_servers_queue() {
    let mut pool = machine(1);
    for n in 0..3 {
        submit(&mut pool, s(0), n, false);
    }
    submit(&mut pool, s(1), 10, true);
    submit(&mut pool, s(1), 11, true);
    // Job 0 took the one slot before the others came.
    let mut order = Vec::new();
    let mut now = s(1);
    let mut sent = submits(&mut pool);
    while let Some((server, job, prompt, front)) = sent.pop() {
        assert_eq!(front, job.0 >= 10, "job {job} posted in front: {front}");
        order.push(job.0);
        now += s(1);
        pool.handle_event(now, ServerId(server), Event::Completed { prompt });
        let _ = reports(&mut pool, now);
        sent = submits(&mut pool);
    }
    assert_eq!(
        order,
        [0, 10, 11, 1, 2],
        "priority first, in submission order"
    );
    assert_eq!(pool.stats(now).servers[0].succeeded, 5);
}

#[test]
fn a_retried_job_still_goes_before_priority_jobs_submitted_later() {
    let mut sched = Scheduler::new(1, PoolConfig::default());
    sched.submit(s(0), JobId(1)).unwrap();
    sched.submit(s(0), JobId(2)).unwrap();
    sched.submit_in_front(s(0), JobId(3)).unwrap();
    sched.submit_in_front(s(0), JobId(4)).unwrap();
    assert_eq!(
        sched.submit_in_front(s(0), JobId(4)),
        Err(PoolMisuse::DuplicateJob(JobId(4)))
    );
    let mut dispatched = Vec::new();
    while let Some(a) = sched.poll_action(s(0)) {
        if let Action::Dispatch { job, .. } = a {
            dispatched.push(job.0);
        }
    }
    assert_eq!(dispatched, [3, 4], "two slots: both priority jobs");
    // Job 3 fails and is retried: it goes first, before job 1.
    let failed = JobResult::failed(true, false, "boom");
    sched.handle_result(s(1), JobId(3), 1, failed).unwrap();
    let next: Vec<u64> = std::iter::from_fn(|| sched.poll_action(s(1)))
        .filter_map(|a| match a {
            Action::Dispatch { job, .. } => Some(job.0),
            _ => None,
        })
        .collect();
    assert_eq!(next, [3]);
}

#[test]
fn cancelling_a_waiting_job_takes_it_off_the_queue() {
    let mut pool = machine(1);
    submit(&mut pool, s(0), 1, false);
    submit(&mut pool, s(0), 2, false);
    let sent = submits(&mut pool);
    assert_eq!(sent.len(), 1);
    assert_eq!(pool.stats(s(0)).queued, 1);
    assert_eq!(pool.cancel(s(1), JobId(2)), Ok(Handled::Applied));
    assert!(
        submits(&mut pool).is_empty(),
        "nothing to cancel on a server"
    );
    let r = reports(&mut pool, s(1));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].job, JobId(2));
    assert!(matches!(r[0].outcome, Err(JobError::Cancelled)), "{r:?}");
    assert_eq!(r[0].attempts, 0);
    assert_eq!(pool.stats(s(1)).queued, 0);
    // Cancelling again, or an unknown job, changes nothing.
    assert_eq!(
        pool.cancel(s(2), JobId(2)),
        Err(PoolMisuse::UnknownJob(JobId(2)))
    );
    assert!(reports(&mut pool, s(2)).is_empty());
}

#[test]
fn cancelling_a_running_job_cancels_its_prompt_and_frees_the_slot() {
    let mut pool = machine(1);
    submit(&mut pool, s(0), 1, false);
    submit(&mut pool, s(0), 2, false);
    let [(server, JobId(1), ref prompt, _)] = submits(&mut pool)[..] else {
        panic!("one dispatch")
    };
    let prompt = prompt.clone();
    pool.handle_event(
        s(1),
        ServerId(server),
        Event::Started {
            prompt: prompt.clone(),
        },
    );
    assert_eq!(pool.cancel(s(2), JobId(1)), Ok(Handled::Applied));
    let io: Vec<Io> = std::iter::from_fn(|| pool.poll_io()).collect();
    assert!(
        io.iter()
            .any(|i| matches!(i, Io::Cancel { server: ServerId(0), prompt: p } if *p == prompt)),
        "{io:?}"
    );
    // The slot went to job 2.
    assert!(
        io.iter()
            .any(|i| matches!(i, Io::Submit { job: JobId(2), .. })),
        "{io:?}"
    );
    let r = reports(&mut pool, s(2));
    assert_eq!(r.len(), 1);
    assert!(matches!(r[0].outcome, Err(JobError::Cancelled)), "{r:?}");
    assert_eq!(r[0].prompt_id.as_ref(), Some(&prompt));
    // The server's word on the cancelled prompt comes later and changes nothing.
    pool.handle_event(s(3), ServerId(0), Event::Cancelled { prompt });
    assert!(reports(&mut pool, s(3)).is_empty());
    let stats = pool.stats(s(3));
    assert_eq!(
        stats.servers[0].failed, 0,
        "a cancel is not the server's failure"
    );
    assert_eq!(stats.servers[0].in_flight, 1);
    assert_eq!(pool.cancel(s(4), JobId(2)), Ok(Handled::Applied));
    assert_eq!(reports(&mut pool, s(4)).len(), 1);
    assert!(pool.scheduler().is_idle());
}

#[test]
fn stats_count_busy_time_per_server_up_to_now() {
    let mut pool = machine(2);
    submit(&mut pool, s(0), 1, false);
    submit(&mut pool, s(0), 2, false);
    submit(&mut pool, s(0), 3, false);
    let sent = submits(&mut pool);
    assert_eq!(sent.len(), 2);
    let stats = pool.stats(s(0));
    assert_eq!(stats.queued, 1);
    assert_eq!(stats.in_flight, 2);
    // Server 1's job fails (not retryable) at 2 s; job 3 goes there; server 0's ends at 5 s.
    let (a, b) = (&sent[0], &sent[1]);
    let error = json!({"prompt_id": b.2.to_string(), "node_id": "1", "node_type": "EmptyImage"});
    let failure = crate::session::Failure::Execution(serde_json::from_value(error).unwrap());
    let failed = Event::Failed {
        prompt: b.2.clone(),
        failure,
    };
    pool.handle_event(s(2), ServerId(b.0), failed);
    assert_eq!(reports(&mut pool, s(2)).len(), 1);
    let next = submits(&mut pool);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, b.0);
    pool.handle_event(
        s(5),
        ServerId(a.0),
        Event::Completed {
            prompt: a.2.clone(),
        },
    );
    assert_eq!(reports(&mut pool, s(5)).len(), 1);
    let stats = pool.stats(s(7));
    let (sa, sb) = (&stats.servers[a.0], &stats.servers[b.0]);
    assert_eq!(sa.busy, s(5));
    assert_eq!((sa.succeeded, sa.failed, sa.in_flight), (1, 0, 0));
    assert_eq!(sb.busy, s(7), "2 s with job 2, then 5 s so far with job 3");
    assert_eq!((sb.succeeded, sb.failed, sb.in_flight), (0, 1, 1));
    assert_eq!(sa.state, BreakerState::Closed);
    assert_eq!((stats.queued, stats.in_flight, stats.finished), (0, 1, 2));
    // Without `now`, only the intervals that ended count.
    assert_eq!(pool.scheduler().stats().servers[b.0].busy, s(2));
}

#[test]
fn outputs_are_reported_as_they_arrive() {
    let mut pool = machine(1);
    submit(&mut pool, s(0), 1, false);
    let (server, _, prompt, _) = submits(&mut pool)[0].clone();
    let _ = std::iter::from_fn(|| pool.poll_event()).count();
    let output = Event::Output {
        prompt: prompt.clone(),
        node: "2".into(),
        index: 0,
        image: Image {
            format: ImageFormat::Png,
            data: bytes::Bytes::from_static(b"\x89PNG"),
        },
        file: None,
    };
    pool.handle_event(s(1), ServerId(server), output);
    let ev: Vec<PoolEvent> = std::iter::from_fn(|| pool.poll_event()).collect();
    assert!(
        matches!(
            &ev[..],
            [PoolEvent::Output {
                job: JobId(1),
                attempt: 1,
                event: Event::Output { .. },
                ..
            }]
        ),
        "{ev:?}"
    );
    assert_eq!(ev[0].job(), JobId(1));
    pool.handle_event(s(2), ServerId(server), Event::Completed { prompt });
    let r = reports(&mut pool, s(2));
    assert_eq!(r[0].outputs.len(), 1, "and once more in the report");
}

#[test]
fn a_job_submitted_after_close_ends_at_once() {
    let mut pool = machine(1);
    submit(&mut pool, s(0), 1, false);
    pool.close();
    submit(&mut pool, s(0), 2, false);
    assert_eq!(
        pool.submit_with(s(0), JobId(1), graph(), JobOptions::new()),
        Err(PoolMisuse::DuplicateJob(JobId(1)))
    );
    let sent = submits(&mut pool);
    assert_eq!(sent.len(), 1, "the job from before the close runs");
    let r = reports(&mut pool, s(0));
    assert_eq!(r.len(), 1);
    assert!(matches!(r[0].outcome, Err(JobError::PoolClosed)), "{r:?}");
    assert!(!pool.is_done(), "job 1 still runs");
    pool.handle_event(
        s(1),
        ServerId(0),
        Event::Completed {
            prompt: sent[0].2.clone(),
        },
    );
    assert_eq!(reports(&mut pool, s(1)).len(), 1);
    assert!(pool.is_done());
}

#[test]
fn cancelling_a_job_while_its_files_upload_posts_nothing() {
    let mut pool = machine(1);
    let upload = Upload {
        input: "1.width".into(),
        file_name: "cat.png".into(),
        bytes: std::sync::Arc::new(b"\x89PNG".to_vec()),
    };
    let options = JobOptions::new().uploads(vec![upload]);
    pool.submit_with(s(0), JobId(1), graph(), options).unwrap();
    let io: Vec<Io> = std::iter::from_fn(|| pool.poll_io()).collect();
    let [Io::Http { id, .. }] = io[..] else {
        panic!("the upload first: {io:?}")
    };
    assert_eq!(pool.cancel(s(1), JobId(1)), Ok(Handled::Applied));
    let r = reports(&mut pool, s(1));
    assert!(matches!(r[0].outcome, Err(JobError::Cancelled)), "{r:?}");
    // The upload's answer comes after: nothing is posted.
    let answer =
        crate::wire::HttpResponse::new(200, r#"{"name":"cat.png","subfolder":"","type":"input"}"#);
    pool.handle_http(s(2), id, Ok(answer));
    assert!(submits(&mut pool).is_empty());
    assert!(pool.scheduler().is_idle());
    assert_eq!(pool.stats(s(2)).servers[0].failed, 0);
}
