//! Stress: pairwise FIFO between many senders and receivers (messages from one process to
//! another arrive in the order sent), process churn, and calls that never take an answer
//! meant for an earlier call.

mod common;

use std::time::Duration;

use cairn_scheduler::{ActorRef, CallError, Ctx, ExitReason, Message, Pid, Reply, Runtime, Signal};
use common::*;

/// A receiver of `(sender, seq)` that checks each sender's sequence is 0, 1, 2, … and exits
/// `Normal` after `total` messages, or with an error naming the first gap.
fn spawn_fifo_checker(rt: &Runtime, senders: usize, total: u64) -> ActorRef<(usize, u64)> {
    rt.spawn(move |mut ctx: Ctx<(usize, u64)>| async move {
        let mut next = vec![0u64; senders];
        for _ in 0..total {
            match ctx.recv().await {
                Some(Message::User((from, seq))) => {
                    if seq != next[from] {
                        return ExitReason::Error(format!(
                            "from sender {from}: got {seq}, expected {}",
                            next[from]
                        ));
                    }
                    next[from] += 1;
                }
                other => return ExitReason::Error(format!("unexpected {other:?}")),
            }
        }
        ExitReason::Normal
    })
}

/// Spawns `receivers` FIFO checkers, each expecting `per_pair` messages from each of
/// `senders` senders; runs `send` with them, and asserts that every checker saw each sender's
/// messages in order (it exited `Normal`).
fn assert_fifo(
    rt: &Runtime,
    receivers: usize,
    senders: usize,
    per_pair: u64,
    send: impl FnOnce(&[ActorRef<(usize, u64)>]),
) {
    let receivers: Vec<_> = (0..receivers)
        .map(|_| spawn_fifo_checker(rt, senders, senders as u64 * per_pair))
        .collect();
    let pids: Vec<Pid> = receivers.iter().map(|r| r.pid()).collect();
    for reason in exits_after(rt, &pids, || send(&receivers)) {
        assert_eq!(reason, ExitReason::Normal);
    }
}

#[test]
fn messages_from_8_sender_processes_to_4_receivers_arrive_in_send_order() {
    const SENDERS: usize = 8;
    const RECEIVERS: usize = 4;
    const PER_PAIR: u64 = 20_000;
    let rt = runtime_with_mailboxes(4, 64);
    assert_fifo(&rt, RECEIVERS, SENDERS, PER_PAIR, |receivers| {
        for s in 0..SENDERS {
            let to = receivers.to_vec();
            rt.spawn(move |ctx: Ctx<()>| async move {
                for seq in 0..PER_PAIR {
                    for (i, r) in to.iter().enumerate() {
                        // Mix typed handles and pid-based sends.
                        let sent = if (seq + i as u64) % 2 == 0 {
                            r.send((s, seq)).await
                        } else {
                            ctx.handle().send(r.pid(), (s, seq)).await
                        };
                        assert!(sent.is_ok());
                    }
                }
            });
        }
    });
}

#[test]
fn messages_from_outside_threads_arrive_in_send_order() {
    const THREADS: usize = 4;
    const RECEIVERS: usize = 2;
    const PER_PAIR: u64 = 10_000;
    let rt = runtime_with_mailboxes(2, 32);
    assert_fifo(&rt, RECEIVERS, THREADS, PER_PAIR, |receivers| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (to, h) = (receivers.to_vec(), rt.handle());
                std::thread::spawn(move || {
                    for seq in 0..PER_PAIR {
                        for r in &to {
                            if seq % 3 == 0 {
                                // try_send, spinning on Full: still in order.
                                let mut msg = (t, seq);
                                loop {
                                    match h.try_send(r.pid(), msg) {
                                        Ok(()) => break,
                                        Err(cairn_scheduler::SendError::Full(m)) => {
                                            msg = m;
                                            std::thread::yield_now();
                                        }
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            } else {
                                cairn_scheduler::block_on(r.send((t, seq))).unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn spawn_and_exit_churn_leaves_an_empty_process_table() {
    const SPAWNERS: usize = 8;
    const CHILDREN: usize = 1_500;
    let rt = runtime(4);
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|_| {
            rt.spawn(|mut ctx: Ctx<()>| async move {
                if ctx.recv().await.is_none() {
                    return ExitReason::Error("no start".into());
                }
                for i in 0..CHILDREN {
                    // The child waits for a go-ahead so the monitor is in place before it
                    // can exit (monitoring an exited pid would fire NoProc instead).
                    let child = ctx.handle().spawn(move |mut c: Ctx<()>| async move {
                        let _ = c.recv().await;
                        if i % 100 == 7 {
                            ExitReason::Error("odd one".into())
                        } else {
                            ExitReason::Normal
                        }
                    });
                    ctx.monitor(child.pid());
                    child.try_send(()).unwrap();
                }
                let (mut normal, mut errors) = (0, 0);
                while normal + errors < CHILDREN {
                    match ctx.recv().await {
                        Some(Message::Signal(Signal::Down { reason, .. })) => match reason {
                            ExitReason::Normal => normal += 1,
                            ExitReason::Error(_) => errors += 1,
                            other => return ExitReason::Error(format!("child: {other}")),
                        },
                        other => return ExitReason::Error(format!("unexpected {other:?}")),
                    }
                }
                if errors == CHILDREN / 100 {
                    ExitReason::Normal
                } else {
                    ExitReason::Error(format!("{errors} children failed"))
                }
            })
        })
        .collect();
    let pids: Vec<Pid> = spawners.iter().map(|s| s.pid()).collect();
    let reasons = exits_after(&rt, &pids, || {
        for s in &spawners {
            s.try_send(()).unwrap();
        }
    });
    for reason in reasons {
        assert_eq!(reason, ExitReason::Normal);
    }
    assert_eq!(rt.process_count(), 0);
}

/// A request of `calls_never_see_an_answer_meant_for_an_earlier_call`: caller `from`'s call
/// number `seq`, answered with `(from, seq)`; a `hold` request is answered only when the
/// same caller's next request arrives, long after the caller gave up on it.
struct Req {
    from: usize,
    seq: u64,
    hold: bool,
    reply: Reply<(usize, u64)>,
}

/// A held request: its call number and reply port.
type Held = (u64, Reply<(usize, u64)>);

#[test]
fn calls_never_see_an_answer_meant_for_an_earlier_call() {
    // Reply slots are reused per worker thread once a call is over (`Reply::pair_cached`).
    // Callers on 4 workers make many calls; every 8th is held by its server past the
    // caller's timeout and answered late, just before the caller's next request is
    // answered. A slot reused too eagerly would hand that late answer to the next call.
    const CALLERS: usize = 8;
    const SERVERS: usize = 2;
    const CALLS: u64 = 4_000;
    let rt = runtime(4);
    let servers: Vec<ActorRef<Req>> = (0..SERVERS)
        .map(|_| {
            rt.spawn(|mut ctx: Ctx<Req>| async move {
                // Per caller: the call it holds and its reply port.
                let mut held: Vec<Option<Held>> = (0..CALLERS).map(|_| None).collect();
                while let Some(Message::User(req)) = ctx.recv().await {
                    if let Some((seq, late)) = held[req.from].take() {
                        if late.send((req.from, seq)).is_ok() {
                            return ExitReason::Error(format!(
                                "caller {}'s call {seq} took its answer after timing out",
                                req.from
                            ));
                        }
                    }
                    if req.hold {
                        held[req.from] = Some((req.seq, req.reply));
                    } else {
                        let _ = req.reply.send((req.from, req.seq));
                    }
                }
                ExitReason::Normal
            })
        })
        .collect();
    let callers: Vec<ActorRef<()>> = (0..CALLERS)
        .map(|from| {
            let servers = servers.clone();
            rt.spawn(move |mut ctx: Ctx<()>| async move {
                if ctx.recv().await.is_none() {
                    return ExitReason::Error("no start".into());
                }
                for seq in 0..CALLS {
                    let hold = seq % 8 == 3;
                    let timeout = if hold {
                        Duration::from_millis(1)
                    } else {
                        Duration::from_secs(60)
                    };
                    let to = &servers[(seq / 8) as usize % SERVERS];
                    let answer = to
                        .call(
                            |reply| Req {
                                from,
                                seq,
                                hold,
                                reply,
                            },
                            timeout,
                        )
                        .await;
                    let expected = if hold {
                        Err(CallError::Timeout)
                    } else {
                        Ok((from, seq))
                    };
                    if answer != expected {
                        return ExitReason::Error(format!(
                            "caller {from}, call {seq}: {answer:?}, expected {expected:?}"
                        ));
                    }
                }
                ExitReason::Normal
            })
        })
        .collect();
    let pids: Vec<Pid> = callers.iter().map(|c| c.pid()).collect();
    let reasons = exits_after(&rt, &pids, || {
        for c in &callers {
            c.try_send(()).unwrap();
        }
    });
    for reason in reasons {
        assert_eq!(reason, ExitReason::Normal);
    }
    for server in &servers {
        let pid = server.pid();
        assert_eq!(
            exit_after(&rt, pid, || rt.exit(pid, ExitReason::Shutdown)),
            ExitReason::Shutdown
        );
    }
}
