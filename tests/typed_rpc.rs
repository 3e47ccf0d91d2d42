//! Typed RPC on one node (`#[cairn::object]`, `#[cairn::actor]`): what a caller sees for an
//! answer, an application error (`Failed(E)`, writes committed), a crash (`NoReply`,
//! writes discarded), a timeout, a one-way message, an unroutable object, a dead actor.

use std::time::Duration;

use cairn::prelude::*;

const T: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum BankError {
    Insufficient { balance: u64 },
    Storage(String),
}

impl From<StorageError> for BankError {
    fn from(e: StorageError) -> Self {
        BankError::Storage(e.to_string())
    }
}

#[derive(Default)]
struct Account {
    balance: u64,
    refusals: u64,
    notes: Vec<String>,
}

#[cairn::object]
impl Account {
    const CLASS: &'static str = "account";

    async fn activate(ctx: &mut ObjectCtx<Self>) -> Result<Self, ActorError> {
        Ok(Account {
            balance: ctx.storage().get("balance")?.unwrap_or(0),
            refusals: ctx.storage().get("refusals")?.unwrap_or(0),
            notes: Vec::new(),
        })
    }

    pub async fn deposit(
        &mut self,
        ctx: &mut ObjectCtx<Self>,
        amount: u64,
    ) -> Result<u64, ActorError> {
        self.balance += amount;
        ctx.storage().put("balance", &self.balance)?;
        Ok(self.balance)
    }

    /// Refuses an overdraft, recording the refusal first: an `Err` is an answer, so
    /// that write commits.
    pub async fn withdraw(
        &mut self,
        ctx: &mut ObjectCtx<Self>,
        amount: u64,
    ) -> Result<u64, BankError> {
        if amount > self.balance {
            self.refusals += 1;
            ctx.storage().put("refusals", &self.refusals)?;
            return Err(BankError::Insufficient {
                balance: self.balance,
            });
        }
        self.balance -= amount;
        ctx.storage().put("balance", &self.balance)?;
        Ok(self.balance)
    }

    pub async fn balance(&mut self) -> u64 {
        self.balance
    }

    pub fn refusals(&mut self) -> u64 {
        self.refusals
    }

    /// Writes, then panics: a crash.
    pub async fn explode(&mut self, ctx: &mut ObjectCtx<Self>, amount: u64) -> u64 {
        ctx.storage()
            .put("balance", &(self.balance + amount))
            .unwrap();
        panic!("exploded while depositing {amount}");
    }

    /// Writes, then fails with `ActorError`: a crash too.
    pub async fn fail_hard(&mut self, ctx: &mut ObjectCtx<Self>) -> Result<u64, ActorError> {
        ctx.storage().put("balance", &(self.balance + 1_000))?;
        Err("the ledger is on fire".into())
    }

    /// One-way.
    pub async fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    pub async fn notes(&mut self) -> Vec<String> {
        self.notes.clone()
    }

    /// Answers only after `delay`.
    pub async fn slow(&mut self, ctx: &mut ObjectCtx<Self>, delay_ms: u64) -> u64 {
        ctx.handle().sleep(Duration::from_millis(delay_ms)).await;
        self.balance
    }
}

/// An actor that serves withdrawals by calling objects it names itself.
#[derive(Default)]
struct Teller {
    served: u64,
}

#[cairn::actor]
impl Teller {
    pub async fn serve(
        &mut self,
        ctx: &mut ActorCtx<Self>,
        account: String,
        amount: u64,
    ) -> Result<u64, BankError> {
        self.served += 1;
        match ctx.object::<Account>(&account).withdraw(amount).await {
            Ok(balance) => Ok(balance),
            Err(CallError::Failed(e)) => Err(e),
            Err(other) => Err(BankError::Storage(other.to_string())),
        }
    }

    pub async fn served(&mut self) -> u64 {
        self.served
    }

    pub async fn crash(&mut self) -> Result<u64, ActorError> {
        Err("teller walked out".into())
    }
}

fn node(dir: &std::path::Path) -> Node {
    let node = Node::builder()
        .workers(2)
        .data_dir(dir)
        .shutdown_grace(Duration::from_millis(200))
        .start()
        .unwrap();
    node.host::<Account>();
    node
}

#[test]
fn an_application_error_reaches_the_caller_as_failed_and_its_writes_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = node(dir.path());
        let acct = node.object::<Account>("alice");
        node.block_on(async {
            assert_eq!(acct.deposit(10).await, Ok(10));
            assert_eq!(
                acct.withdraw(25).await,
                Err(CallError::Failed(BankError::Insufficient { balance: 10 }))
            );
            // Not a crash: the same activation carries on with its state.
            let pid = acct.pid();
            assert_eq!(acct.withdraw(4).await, Ok(6));
            assert_eq!(acct.pid(), pid);
            assert_eq!(acct.refusals().await, Ok(1));
        });
    }
    // The refusal's write was committed with its answer: it survives a restart.
    let node = node(dir.path());
    let acct = node.object::<Account>("alice");
    assert_eq!(node.block_on(acct.refusals()), Ok(1));
    assert_eq!(node.block_on(acct.balance()), Ok(6));
}

#[test]
fn a_panic_or_an_actor_error_is_a_crash_no_reply_and_its_writes_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = node(dir.path());
        let acct = node.object::<Account>("bob");
        node.block_on(async {
            assert_eq!(acct.deposit(5).await, Ok(5));
            assert_eq!(acct.explode(100).await, Err(CallError::NoReply));
            assert_eq!(acct.fail_hard().await, Err(CallError::NoReply));
            // Re-activated from storage: neither crashed handler's write is there.
            assert_eq!(acct.balance().await, Ok(5));
        });
    }
    let node = node(dir.path());
    assert_eq!(
        node.block_on(node.object::<Account>("bob").balance()),
        Ok(5)
    );
}

#[test]
fn a_call_times_out_after_its_default_or_its_own_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let acct = node.object::<Account>("carol");
    let slow = acct.slow(2_000).timeout(Duration::from_millis(20));
    assert_eq!(node.block_on(slow), Err(CallError::Timeout));
    // Within its timeout the same call answers.
    let quick = acct.slow(1).timeout(T);
    assert_eq!(node.block_on(quick), Ok(0));
    assert_eq!(DEFAULT_CALL_TIMEOUT, Duration::from_secs(5));
}

#[test]
fn one_way_methods_arrive_in_order_before_a_later_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let acct = node.object::<Account>("dave");
    node.block_on(async {
        for i in 0..50 {
            acct.note(format!("n{i}")).await.unwrap();
        }
        let notes = acct.notes().await.unwrap();
        let expected: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
        assert_eq!(notes, expected);
    });
}

#[test]
fn an_object_of_a_class_not_hosted_is_unroutable() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .workers(1)
        .data_dir(dir.path())
        .start()
        .unwrap();
    let acct = node.object::<Account>("erin");
    assert!(
        matches!(node.block_on(acct.balance()), Err(CallError::Unroutable(m)) if m.contains("account")),
    );
    assert!(matches!(
        node.block_on(acct.note("x".into())),
        Err(CallError::Unroutable(_))
    ));
}

#[test]
fn a_typed_actor_answers_passes_application_errors_through_and_crashes_on_actor_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::worker("teller", Teller::default).named("teller"));
    let sup = node
        .block_on(Supervisor::start(node.handle(), spec))
        .unwrap();
    let teller = |node: &Node| -> Addr<Teller> {
        node.handle()
            .actor_ref(node.whereis("teller").unwrap())
            .unwrap()
    };
    let first = teller(&node);
    node.block_on(async {
        node.object::<Account>("frank").deposit(3).await.unwrap();
        assert_eq!(first.serve("frank".into(), 2).await, Ok(1));
        assert_eq!(
            first.serve("frank".into(), 2).await,
            Err(CallError::Failed(BankError::Insufficient { balance: 1 }))
        );
        // The application error did not stop it.
        assert_eq!(first.served().await, Ok(2));
        // An ActorError is a crash: no reply, the supervisor restarts it.
        let down = node.handle().monitor(first.pid());
        assert_eq!(first.crash().await, Err(CallError::NoReply));
        assert_eq!(down.await, ExitReason::Error("teller walked out".into()));
    });
    // The old address names no process; the restarted teller starts from scratch.
    assert_eq!(node.block_on(first.served()), Err(CallError::NoProc));
    // The supervisor takes exit signals before requests: by its answer it has restarted.
    let children = node.block_on(sup.which_children()).unwrap();
    let restarted = teller(&node);
    assert_eq!(Some(restarted.pid()), children[0].pid);
    assert_ne!(restarted.pid(), first.pid());
    assert_eq!(node.block_on(restarted.served()), Ok(0));
}
