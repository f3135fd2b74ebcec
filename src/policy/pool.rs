//! The threads that evaluate the policy. Evaluation is CPU work that a
//! policy can make slow (or, with a runaway rule, endless until its time
//! limit); run on the async workers it would stall every connection and the
//! admin listener with it. Here it runs on a fixed set of dedicated threads
//! fed by a bounded queue, and the caller waits with a hard deadline.
//!
//! What each bound buys:
//! - **queue full**: the call is refused at once ([`PolicyError::Overloaded`],
//!   `policy_overloaded`); nothing waits without bound.
//! - **deadline**: the caller waits at most `policy.timeout` plus a small
//!   margin from the moment it asked, whatever the evaluation is doing (a
//!   builtin regorus cannot interrupt, a thread the OS has not scheduled).
//!   A call still queued then is refused as `policy_overloaded`
//!   ([`PolicyError::NoWorkerInTime`]); one already running as
//!   `policy_timeout`.
//! - **runaway evaluation**: it occupies one thread, never an async worker.
//!   regorus's own execution timer stops it at its next check, set to what
//!   is left of the caller's deadline (never more than `policy.timeout`), so
//!   a thread is free again about when its caller gives up; a single
//!   builtin call runs to its end first. Work whose caller has already
//!   given up is skipped when a thread takes it from the queue.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use regorus::Value;
use tokio::sync::oneshot;

use super::{Policy, PolicyError};

/// How much longer than `policy.timeout` a caller waits: regorus checks its
/// timer between steps, so a timely evaluation may overrun it a little.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

type Answer = Result<serde_json::Value, PolicyError>;

struct Job {
    policy: Arc<Policy>,
    input: Value,
    /// When the caller stops waiting for the evaluation.
    deadline: Instant,
    /// Set when a thread starts the evaluation (tells a timeout from a wait).
    started: Arc<AtomicBool>,
    reply: oneshot::Sender<Answer>,
}

/// The evaluation threads and their queue; cheap to share behind an `Arc`.
/// The threads end when the pool is dropped.
pub struct Pool {
    queue: Arc<Queue>,
    capacity: usize,
}

/// The jobs waiting for a thread. A condition variable wakes exactly one
/// idle thread per job; a channel's receiver behind a mutex woke two (the
/// thread waiting in `recv`, then the next one waiting for the mutex) and
/// a thread switch costs more than most evaluations here.
struct Queue {
    state: Mutex<Waiting>,
    ready: Condvar,
}

struct Waiting {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job, waiting for one; `None` once the pool is dropped.
    fn take(&self) -> Option<Job> {
        let mut waiting = self.lock();
        loop {
            if waiting.closed {
                return None;
            }
            if let Some(job) = waiting.jobs.pop_front() {
                return Some(job);
            }
            waiting = self.ready.wait(waiting).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

impl Pool {
    /// Starts `workers` threads sharing a queue of `capacity` evaluations.
    pub fn start(workers: usize, capacity: usize) -> std::io::Result<Pool> {
        let queue = Arc::new(Queue {
            state: Mutex::new(Waiting {
                jobs: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let pool = Pool {
            queue: queue.clone(),
            capacity,
        };
        for i in 0..workers.max(1) {
            let queue = queue.clone();
            // On failure `pool` drops and ends the threads already started.
            std::thread::Builder::new()
                .name(format!("countersign-policy-{i}"))
                .spawn(move || work(&queue))?;
        }
        Ok(pool)
    }

    /// Evaluates `policy` for one input on a pool thread and waits at most
    /// its time limit plus [`DEADLINE_MARGIN`].
    pub async fn evaluate(&self, policy: Arc<Policy>, input: Value) -> Answer {
        let limit = policy.timeout();
        let (reply, answer) = oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        let job = Job {
            policy,
            input,
            deadline: Instant::now() + limit,
            started: started.clone(),
            reply,
        };
        {
            let mut waiting = self.queue.lock();
            if waiting.jobs.len() >= self.capacity {
                return Err(PolicyError::Overloaded(self.capacity));
            }
            waiting.jobs.push_back(job);
        }
        self.queue.ready.notify_one();
        match tokio::time::timeout(limit + DEADLINE_MARGIN, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(PolicyError::Eval(
                "the policy worker stopped before answering".into(),
            )),
            // Dropping `answer` closes the channel: a thread that has not
            // started this job yet skips it.
            Err(_) if started.load(Ordering::Acquire) => Err(PolicyError::Timeout(limit)),
            Err(_) => Err(PolicyError::NoWorkerInTime(limit)),
        }
    }
}

/// One pool thread: takes jobs until the pool is dropped.
fn work(queue: &Queue) {
    while let Some(job) = queue.take() {
        if job.reply.is_closed() {
            continue; // the caller stopped waiting while this sat in the queue
        }
        let left = job.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = job
                .reply
                .send(Err(PolicyError::NoWorkerInTime(job.policy.timeout())));
            continue;
        }
        job.started.store(true, Ordering::Release);
        let (policy, input) = (job.policy, job.input);
        // A panic inside the engine fails this call closed and keeps the thread.
        let answer =
            std::panic::catch_unwind(AssertUnwindSafe(|| policy.evaluate_within(input, left)))
                .unwrap_or_else(|_| {
                    Err(PolicyError::Eval("the policy evaluation panicked".into()))
                });
        let _ = job.reply.send(answer);
    }
}
