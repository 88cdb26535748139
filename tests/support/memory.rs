//! An in-memory store for the guard's protocol tests: leases with a token counter and an expiry,
//! records, and faults injected at any primitive on any call. A lease "held by someone else" is
//! set up directly, so every branch of the protocol can be reached without a second process.

use initguard::record::Record;
use initguard::store::{Attempt, Lease, Listing, Observation, Store, StoreError};
use initguard::task::{Holder, TaskId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The primitives a fault can be injected at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    TryAcquire,
    WaitChange,
    Renew,
    /// A record write in this state (`running`, `succeeded`, …).
    Write(&'static str),
    Release,
}

/// Makes the error a fault returns, from the task's key.
pub type Fault = fn(&str) -> StoreError;

#[derive(Debug, Clone)]
struct Held {
    token: u64,
    holder: Holder,
    /// Ours when taken through `try_acquire`; someone else's when set up with `hold`.
    ours: bool,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    leases: HashMap<String, Held>,
    tokens: HashMap<String, u64>,
    /// Errors to return, in order, the next times an op is called.
    faults: HashMap<Op, Vec<Fault>>,
    calls: HashMap<Op, usize>,
    /// Taken leases, counted.
    takes: usize,
    /// A record that replaces the current one on the next `wait_change` (another holder's
    /// outcome, as it lands while we wait), and whether the other holder lets go then.
    on_wait: Option<(Record, bool)>,
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    pub renews: bool,
}

pub fn unreachable(_: &str) -> StoreError {
    StoreError::Unreachable {
        store: "memory:".into(),
        reason: "injected".into(),
    }
}

pub fn lost(key: &str) -> StoreError {
    StoreError::LeaseLost {
        key: key.into(),
        token: 0,
        reason: "injected".into(),
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            renews: true,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn put(&self, rec: Record) {
        let name = TaskId {
            key: initguard::task::Key::parse(&rec.key).unwrap(),
            scope: rec.scope,
            instance: rec.instance.clone(),
        }
        .storage_name();
        let mut i = self.inner();
        let t = i.tokens.entry(name.clone()).or_default();
        *t = (*t).max(rec.token);
        i.records.insert(name, rec);
    }

    pub fn record(&self, id: &TaskId) -> Option<Record> {
        self.inner().records.get(&id.storage_name()).cloned()
    }

    /// Someone else holds the lease of `id`.
    pub fn hold(&self, id: &TaskId, holder: Holder) {
        let mut i = self.inner();
        let name = id.storage_name();
        let token = {
            let t = i.tokens.entry(name.clone()).or_default();
            *t += 1;
            *t
        };
        i.leases.insert(
            name,
            Held {
                token,
                holder,
                ours: false,
            },
        );
    }

    /// On the next wait, the record becomes `rec`; the other holder lets go when `free`.
    pub fn on_wait(&self, rec: Record, free: bool) {
        self.inner().on_wait = Some((rec, free));
    }

    pub fn fail(&self, op: Op, errors: &[Fault]) {
        self.inner()
            .faults
            .entry(op)
            .or_default()
            .extend(errors.iter().copied());
    }

    pub fn calls(&self, op: Op) -> usize {
        self.inner().calls.get(&op).copied().unwrap_or(0)
    }

    pub fn takes(&self) -> usize {
        self.inner().takes
    }

    fn enter(&self, op: Op, key: &str) -> Result<(), StoreError> {
        let mut i = self.inner();
        *i.calls.entry(op).or_default() += 1;
        match i.faults.get_mut(&op) {
            Some(list) if !list.is_empty() => Err(list.remove(0)(key)),
            _ => Ok(()),
        }
    }

    fn held_by_us(i: &Inner, lease: &Lease) -> bool {
        i.leases
            .get(&lease.id.storage_name())
            .is_some_and(|h| h.ours && h.token == lease.token)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory:".into()
    }

    fn needs_renewal(&self) -> bool {
        self.renews
    }

    async fn read(&self, id: &TaskId) -> Result<Option<Record>, StoreError> {
        self.enter(Op::Read, &id.to_string())?;
        Ok(self.record(id))
    }

    async fn try_acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        self.enter(Op::TryAcquire, &id.to_string())?;
        let mut i = self.inner();
        let name = id.storage_name();
        if let Some(h) = i.leases.get(&name) {
            return Ok(Attempt::Busy(Observation {
                holder: Some(h.holder.clone()),
                held_for: None,
                version: h.token.to_string(),
                record: i.records.get(&name).cloned().map(Box::new),
                ttl: Some(ttl),
                lapses_in: Some(ttl),
            }));
        }
        let token = {
            let t = i.tokens.entry(name.clone()).or_default();
            *t += 1;
            *t
        };
        i.leases.insert(
            name,
            Held {
                token,
                holder: holder.clone(),
                ours: true,
            },
        );
        i.takes += 1;
        Ok(Attempt::Taken(Lease {
            id: id.clone(),
            token,
            holder: holder.clone(),
            ttl,
            handle: Box::new(()),
        }))
    }

    async fn wait_change(
        &self,
        id: &TaskId,
        _seen: &Observation,
        until: Instant,
    ) -> Result<(), StoreError> {
        self.enter(Op::WaitChange, &id.to_string())?;
        let landed = self.inner().on_wait.take();
        if let Some((rec, free)) = landed {
            let mut i = self.inner();
            let name = id.storage_name();
            i.records.insert(name.clone(), rec);
            if free {
                i.leases.remove(&name);
            }
            return Ok(());
        }
        let pause = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20));
        tokio::time::sleep(pause).await;
        Ok(())
    }

    async fn observe(&self, id: &TaskId) -> Result<Option<Observation>, StoreError> {
        let i = self.inner();
        Ok(i.leases.get(&id.storage_name()).map(|h| Observation {
            holder: Some(h.holder.clone()),
            held_for: None,
            version: h.token.to_string(),
            record: None,
            ttl: None,
            lapses_in: None,
        }))
    }

    async fn free_if_unchanged(&self, id: &TaskId, seen: &Observation) -> Result<bool, StoreError> {
        let mut i = self.inner();
        let name = id.storage_name();
        match i.leases.get(&name) {
            Some(h) if h.token.to_string() == seen.version => {
                i.leases.remove(&name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        self.enter(Op::Renew, &lease.id.to_string())?;
        if Self::held_by_us(&self.inner(), lease) {
            Ok(())
        } else {
            Err(lost(&lease.id.to_string()))
        }
    }

    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError> {
        let state: &'static str = match record.state.to_string().as_str() {
            "running" => "running",
            "succeeded" => "succeeded",
            "failed" => "failed",
            "gave_up" => "gave_up",
            "interrupted" => "interrupted",
            _ => "other",
        };
        self.enter(Op::Write(state), &lease.id.to_string())?;
        let mut i = self.inner();
        if !Self::held_by_us(&i, lease) {
            return Err(lost(&lease.id.to_string()));
        }
        i.records.insert(lease.id.storage_name(), record.clone());
        Ok(())
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        self.enter(Op::Release, &lease.id.to_string())?;
        let mut i = self.inner();
        if Self::held_by_us(&i, &lease) {
            i.leases.remove(&lease.id.storage_name());
        }
        Ok(())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let i = self.inner();
        Ok(Listing {
            records: i.records.values().cloned().collect(),
            unreadable: Vec::new(),
        })
    }
}
