//! Group commit: concurrent writes share one lock hold, one SQLite
//! transaction and one compile.
//!
//! [`Shared::write`] commits each request on its own: under load the
//! SQLite commit (WAL frames for the same few pages, rewritten per request)
//! and the hand-offs between request threads waiting on the lock were most
//! of a port creation's cost. Writes submitted here go to one writer thread
//! instead, which takes everything queued (up to [`MAX_BATCH`]) and runs it
//! as one transaction:
//!
//! * each operation runs behind a savepoint ([`State::savepoint`]): one that
//!   fails is undone alone and answered with its own error, the others go on;
//! * the survivors' changes are written to SQLite in one transaction, and
//!   only once that has committed does anyone see them: the lock is held
//!   until then, and each caller is answered after it (so an answered write
//!   survives `kill -9`, as with [`Shared::write`]);
//! * if the commit fails, every operation of the batch is rolled back and
//!   answered with the error: all or nothing, per operation as seen by its
//!   caller.
//!
//! Operations are owned closures (`'static`): the thread runs them after the
//! request that made them has handed them over.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::Value;
use switchyard_ml2::{Ctx, Ml2};
use switchyard_model::{NeutronError, Result, State, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::core::Shared;

/// Renders an operation's answer from the committed state.
pub type Render = Box<dyn FnOnce(&Ml2, &State) -> Result<Value> + Send>;

/// One write: mutates the state (inside the batch's transaction) and says
/// how to render its answer once committed.
pub type Op = Box<dyn FnOnce(&Ml2, &mut State, &Ctx) -> Result<Render> + Send>;

/// The most operations one transaction takes: bounds how long the lock is
/// held at a time (each is some tens of microseconds).
pub const MAX_BATCH: usize = 64;

/// How many writes may wait for the writer before submitters wait to queue.
const QUEUE: usize = 1024;

pub(crate) struct Job {
    ctx: Ctx,
    op: Op,
    reply: oneshot::Sender<Result<Value>>,
}

/// The writer thread's end: it holds no sender, so it ends once every
/// [`Shared`] (and with them the sender) is gone.
pub(crate) fn start(shared: Shared) -> mpsc::Sender<Job> {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            while let Some(first) = next(&mut rx) {
                let mut jobs = Vec::with_capacity(8);
                jobs.push(first);
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                // A panic outside the operations (a bug) drops this batch's
                // answers (its callers get an error) but not the thread.
                if catch_unwind(AssertUnwindSafe(|| run(&shared, jobs))).is_err() {
                    tracing::error!("group commit panicked; its batch was not answered");
                }
            }
        });
    if let Err(e) = spawned {
        // The receiver is gone with the closure: every submit fails cleanly.
        tracing::error!(error = %e, "could not start the writer thread");
    }
    tx
}

/// How long the writer looks for more work before it sleeps: a request's
/// answer makes its client send the next one within tens of microseconds,
/// and waking a sleeping thread costs about as much again.
const LINGER: std::time::Duration = std::time::Duration::from_micros(50);

/// The next job, or `None` once every sender is gone.
fn next(rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    let until = std::time::Instant::now() + LINGER;
    loop {
        match rx.try_recv() {
            Ok(j) => return Some(j),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() >= until => {
                return rx.blocking_recv();
            }
            Err(mpsc::error::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
}

/// Runs one batch as one transaction (see the module doc).
fn run(shared: &Shared, jobs: Vec<Job>) {
    let mut g = shared.write_lock_timed();
    let core = &mut *g;
    core.state.begin();
    let mut latest: Option<Timestamp> = None;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for Job { ctx, op, reply } in jobs {
        core.state.savepoint();
        let r = match catch_unwind(AssertUnwindSafe(|| op(&core.ml2, &mut core.state, &ctx))) {
            Ok(Ok(render)) => {
                latest = latest.max(Some(ctx.now));
                Ok(render)
            }
            Ok(Err(e)) => {
                core.state.rollback_to_savepoint();
                Err(e)
            }
            Err(_) => {
                tracing::error!("operation panicked; it was rolled back");
                core.state.rollback_to_savepoint();
                Err(NeutronError::internal())
            }
        };
        outcomes.push((reply, r));
    }
    let Some(now) = latest else {
        // Nothing succeeded; everything is already undone.
        core.state.rollback();
        drop(g);
        for (reply, r) in outcomes {
            let _ = reply.send(r.map(|_| Value::Null));
        }
        return;
    };
    let persisted = catch_unwind(AssertUnwindSafe(|| core.persist(&now)))
        .unwrap_or_else(|_| Err(NeutronError::internal()));
    if let Err(e) = persisted {
        core.state.rollback();
        drop(g);
        for (reply, r) in outcomes {
            let _ = reply.send(r.and_then(|_| Err(e.clone())));
        }
        return;
    }
    shared.publish(core, now);
    let answers: Vec<_> = outcomes
        .into_iter()
        .map(|(reply, r)| {
            let out = r.and_then(|render| {
                catch_unwind(AssertUnwindSafe(|| render(&core.ml2, &core.state)))
                    .unwrap_or_else(|_| Err(NeutronError::internal()))
            });
            (reply, out)
        })
        .collect();
    drop(g);
    for (reply, out) in answers {
        // A caller that went away (its client hung up) still had its write
        // committed, as with a plain write.
        let _ = reply.send(out);
    }
}

impl Shared {
    /// Runs `op` as part of the next group commit and answers with what
    /// its render gives on the committed state (see the module doc).
    pub async fn submit(&self, ctx: Ctx, op: Op) -> Result<Value> {
        let tx = self.writer.get_or_init(|| {
            let mut me = self.clone();
            me.writer = std::sync::Arc::default();
            start(me)
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = tx.send(Job { ctx, op, reply }).await {
            // No writer (it could not be started): the write commits on its
            // own, as any other write does.
            tracing::warn!("no writer thread; committing alone");
            let me = self.clone();
            return tokio::task::spawn_blocking(move || {
                me.write(
                    &job.ctx,
                    |ml2, st, ctx| (job.op)(ml2, st, ctx),
                    |ml2, st, render| render(ml2, st),
                )
            })
            .await
            .unwrap_or_else(|_| Err(NeutronError::internal()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(NeutronError::internal()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};
    use switchyard_ml2::{Ml2Config, ops};
    use switchyard_store::{Durability, SqliteStore};

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn create_port(body: Value) -> Op {
        let body = obj(body);
        Box::new(move |ml2, st, ctx| {
            let id = ops::ports::create(ml2, st, ctx, &body)?;
            Ok(Box::new(move |_: &Ml2, st: &State| {
                Ok(json!(st.ports.get(&id).map(|p| p.name.clone())))
            }))
        })
    }

    fn names(st: &State) -> Vec<String> {
        let mut n: Vec<String> = st.ports.values().map(|p| p.name.clone()).collect();
        n.sort();
        n
    }

    /// Operations that fail, half-done or by panicking, inside a batch are
    /// undone alone: the others commit, see each other's writes in order,
    /// and are on disk when answered; each caller gets its own outcome.
    #[test]
    fn a_batch_commits_its_good_operations_and_undoes_each_failed_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        let app =
            crate::open_app(&db, Durability::Process, &Ml2Config::default(), "p").expect("app");
        let shared = app.shared;
        let ctx = Ctx::admin("p", shared.clock.now());
        let net = shared
            .write(
                &ctx,
                |ml2, st, ctx| {
                    let net = ops::networks::create(ml2, st, ctx, &obj(json!({"name": "n"})))?;
                    let sub =
                        obj(json!({"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}));
                    ops::subnets::create(st, ctx, &sub)?;
                    Ok(net)
                },
                |_, _, net| Ok(net),
            )
            .expect("network");
        let ip = |name: &str| json!({"network_id": net, "name": name, "fixed_ips": [{"ip_address": "10.0.0.10"}]});
        let net2 = net.clone();
        let ops: Vec<Op> = vec![
            create_port(ip("a")),
            // The address job 1 took in this same batch.
            create_port(ip("dup")),
            // Makes a port, then fails: the port must go with it.
            Box::new(move |ml2, st, ctx| {
                ops::ports::create(
                    ml2,
                    st,
                    ctx,
                    &obj(json!({"network_id": net2, "name": "half"})),
                )?;
                Err(NeutronError::http_bad_request("refused after writing"))
            }),
            Box::new(|_, st, _| {
                st.remove(switchyard_model::Kind::Port, "none");
                panic!("a bug in an operation")
            }),
            create_port(json!({"network_id": net, "name": "b"})),
        ];
        let mut answers = Vec::new();
        let jobs = ops
            .into_iter()
            .map(|op| {
                let (reply, rx) = oneshot::channel();
                answers.push(rx);
                Job {
                    ctx: ctx.clone(),
                    op,
                    reply,
                }
            })
            .collect();
        run(&shared, jobs);
        let got: Vec<std::result::Result<Value, u16>> = answers
            .into_iter()
            .map(|rx| rx.blocking_recv().expect("answered").map_err(|e| e.status))
            .collect();
        assert_eq!(
            got,
            vec![Ok(json!("a")), Err(409), Err(400), Err(500), Ok(json!("b"))]
        );
        let live = shared.read(|_, st| Ok(names(st))).expect("read");
        assert_eq!(live, ["a", "b"]);
        // What was answered is what is on disk.
        let stored = SqliteStore::open(&db, Durability::Process)
            .and_then(|s| s.load())
            .expect("reload");
        assert_eq!(names(&State::from_records(stored)), ["a", "b"]);
    }

    /// The writer answers through the async API too, one batch or several.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submitted_writes_are_all_answered_and_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = crate::open_app(
            &dir.path().join("db"),
            Durability::Process,
            &Ml2Config::default(),
            "p",
        )
        .expect("app");
        let shared = app.shared;
        let ctx = Ctx::admin("p", shared.clock.now());
        let net = shared
            .write(
                &ctx,
                |ml2, st, ctx| ops::networks::create(ml2, st, ctx, &obj(json!({"name": "n"}))),
                |_, _, net| Ok(net),
            )
            .expect("network");
        let calls = (0..200).map(|i| {
            let shared = shared.clone();
            let ctx = ctx.clone();
            let op = create_port(json!({"network_id": net, "name": format!("p{i:03}")}));
            tokio::spawn(async move { shared.submit(ctx, op).await })
        });
        let mut answered = Vec::new();
        for c in calls.collect::<Vec<_>>() {
            answered.push(c.await.expect("task").expect("created"));
        }
        let want: Vec<Value> = (0..200).map(|i| json!(format!("p{i:03}"))).collect();
        assert_eq!(answered, want);
        let live = shared.read(|_, st| Ok(names(st))).expect("read");
        assert_eq!(live.len(), 200);
    }
}
