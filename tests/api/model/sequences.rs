//! The operations of a sequence, and how sequences of them are generated
//! (each step drawn with the state the earlier ones leave) and shrunk.

use std::fmt;

use proptest::{
    prelude::*,
    sample::select,
    strategy::{NewTree, Union, ValueTree},
    test_runner::TestRunner,
};

use super::{MAX_OPERATIONS, ORGANIZATIONS};

/// An organization of the pool, by number.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Org(pub(super) usize);

impl fmt::Debug for Org {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "org {}", self.0)
    }
}

/// A client secret, by its role: a sequence never holds a value, only says
/// which one to send when the step runs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    /// The organization's active secret.
    Active(Org),
    /// Its pending secret.
    Pending(Org),
    /// Its n-th discarded or revoked secret (modulo how many it has).
    Old(Org, usize),
    /// A value of the right shape and checksum that was never issued.
    MadeUp,
    /// A value of the right length whose checksum does not match.
    Malformed,
    /// An empty value: `INVALID_ARGUMENT`.
    Empty,
    /// 257 bytes, over the limit: `INVALID_ARGUMENT`.
    Oversized,
}

/// Whose client ID a validation sends.
#[derive(Clone, Copy)]
pub(super) enum Client {
    /// The organization's (while it has none, an unknown one).
    Of(Org),
    Unknown,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Of(org) => write!(f, "client of {org:?}"),
            Self::Unknown => f.write_str("unknown client"),
        }
    }
}

/// One step of a sequence. A step whose value names a secret that does not
/// exist when it runs (possible once shrinking has removed the step that
/// made it) is skipped.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Create(Org),
    Get(Org),
    Generate(Org),
    Activate(Org, Value),
    Validate(Client, Value),
    /// Stop the server and start a new one on the same database: nothing may
    /// live only in the process (and the cache starts empty).
    Restart,
}

/// What generation knows of an organization: enough to pick steps that do
/// something. Blind choices would mostly meet missing organizations and
/// secrets, and rarely rotate one.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    exists: bool,
    active: bool,
    pending: bool,
    old: usize,
}

/// Sequences of operations, each drawn with the state the earlier ones
/// leave, and shrunk by removing steps.
#[derive(Debug)]
pub(super) struct Sequences;

impl Strategy for Sequences {
    type Tree = Sequence;
    type Value = Vec<Op>;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let len = (MAX_OPERATIONS / 4..=MAX_OPERATIONS)
            .new_tree(runner)?
            .current();
        let mut shapes = [Shape::default(); ORGANIZATIONS];
        let mut ops = Vec::with_capacity(len);
        for _ in 0..len {
            let op = next_op(&shapes).new_tree(runner)?.current();
            shape_after(&mut shapes, op);
            ops.push(op);
        }
        Ok(Sequence {
            included: vec![true; ops.len()],
            ops,
            next: 0,
            removed: None,
            removed_in_pass: false,
        })
    }
}

/// The next step, given the organizations' shapes: mostly steps that
/// succeed or change something, some that must fail, each kind weighted.
fn next_op(shapes: &[Shape; ORGANIZATIONS]) -> BoxedStrategy<Op> {
    let orgs = |keep: fn(&Shape) -> bool| -> Vec<Org> {
        (0..ORGANIZATIONS)
            .filter(|&n| keep(&shapes[n]))
            .map(Org)
            .collect()
    };
    let (existing, missing) = (orgs(|s| s.exists), orgs(|s| !s.exists));
    let mut choices: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (1, (0..ORGANIZATIONS).prop_map(|n| Op::Get(Org(n))).boxed()),
        (1, Just(Op::Restart).boxed()),
        (
            1,
            wrong_values(shapes, None)
                .prop_map(|v| Op::Validate(Client::Unknown, v))
                .boxed(),
        ),
    ];
    if !missing.is_empty() {
        let pick = select(missing);
        choices.push((4, pick.clone().prop_map(Op::Create).boxed()));
        choices.push((1, pick.clone().prop_map(Op::Generate).boxed()));
        let values = wrong_values(shapes, None);
        choices.push((
            1,
            (pick, values).prop_map(|(o, v)| Op::Activate(o, v)).boxed(),
        ));
    }
    if !existing.is_empty() {
        choices.push((1, select(existing.clone()).prop_map(Op::Create).boxed()));
    }
    for org in existing {
        let shape = shapes[org.0];
        let wrong = wrong_values(shapes, Some(org));
        let old = (0..shape.old.max(1)).prop_map(move |n| Value::Old(org, n));
        let activate =
            |value: BoxedStrategy<Value>| value.prop_map(move |v| Op::Activate(org, v)).boxed();
        let validate = |value: BoxedStrategy<Value>| {
            value
                .prop_map(move |v| Op::Validate(Client::Of(org), v))
                .boxed()
        };
        choices.push((3, Just(Op::Generate(org)).boxed()));
        if shape.pending {
            choices.push((5, activate(Just(Value::Pending(org)).boxed())));
            choices.push((1, validate(Just(Value::Pending(org)).boxed())));
        }
        if shape.active {
            choices.push((1, activate(Just(Value::Active(org)).boxed())));
            choices.push((4, validate(Just(Value::Active(org)).boxed())));
        }
        if shape.old > 0 {
            choices.push((1, activate(old.clone().boxed())));
            choices.push((1, validate(old.boxed())));
        }
        choices.push((1, activate(wrong.clone().boxed())));
        choices.push((1, validate(wrong.boxed())));
    }
    Union::new_weighted(choices).boxed()
}

/// Values that are not `org`'s active or pending secret: another
/// organization's, values never issued, and now and then one that is
/// refused before anything is looked up.
fn wrong_values(shapes: &[Shape; ORGANIZATIONS], org: Option<Org>) -> BoxedStrategy<Value> {
    let mut values = vec![Value::MadeUp, Value::Malformed];
    for (n, shape) in shapes
        .iter()
        .enumerate()
        .filter(|(n, _)| Some(Org(*n)) != org)
    {
        if shape.active {
            values.push(Value::Active(Org(n)));
        }
        if shape.pending {
            values.push(Value::Pending(Org(n)));
        }
    }
    prop_oneof![
        3 => select(values),
        1 => select(vec![Value::Empty, Value::Oversized]),
    ]
    .boxed()
}

/// The shapes after `op`, by the rules of SPEC §2 (the model below follows
/// the same rules with real values).
fn shape_after(shapes: &mut [Shape; ORGANIZATIONS], op: Op) {
    match op {
        Op::Create(org) => shapes[org.0].exists = true,
        Op::Generate(org) if shapes[org.0].exists => {
            let shape = &mut shapes[org.0];
            shape.old += usize::from(shape.pending);
            shape.pending = true;
        }
        Op::Activate(org, Value::Pending(of)) if org == of && shapes[org.0].pending => {
            let shape = &mut shapes[org.0];
            shape.old += usize::from(shape.active);
            shape.active = true;
            shape.pending = false;
        }
        _ => {}
    }
}

/// A generated sequence, shrunk by removing one step at a time, front to
/// back, pass after pass until a pass removes nothing. Steps are not shrunk
/// themselves: their values are roles, already as simple as they get.
pub(super) struct Sequence {
    ops: Vec<Op>,
    included: Vec<bool>,
    /// The next step to try without.
    next: usize,
    /// The step removed in the candidate being tried.
    removed: Option<usize>,
    removed_in_pass: bool,
}

impl Sequence {
    /// Moves to the next candidate: the current sequence less one more
    /// step. False when no step can go.
    fn remove_next(&mut self) -> bool {
        loop {
            if self.next == self.ops.len() {
                if !self.removed_in_pass {
                    return false;
                }
                (self.next, self.removed_in_pass) = (0, false);
            }
            let index = self.next;
            self.next += 1;
            if self.included[index] && self.included.iter().filter(|&&i| i).count() > 1 {
                self.included[index] = false;
                self.removed = Some(index);
                return true;
            }
        }
    }
}

impl ValueTree for Sequence {
    type Value = Vec<Op>;

    fn current(&self) -> Vec<Op> {
        self.ops
            .iter()
            .zip(&self.included)
            .filter_map(|(op, &included)| included.then_some(*op))
            .collect()
    }

    /// The candidate failed too: keep it, and try without one more step.
    fn simplify(&mut self) -> bool {
        if self.removed.take().is_some() {
            self.removed_in_pass = true;
        }
        self.remove_next()
    }

    /// The candidate passed: the step it lacks is needed. Put it back, and
    /// try without the next one; when none is left, the sequence is back to
    /// the last that failed.
    fn complicate(&mut self) -> bool {
        if let Some(index) = self.removed.take() {
            self.included[index] = true;
        }
        self.remove_next()
    }
}
