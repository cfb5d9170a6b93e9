//! The loop between the monitor and whatever carries out its outputs: an input steps the
//! monitor, each output is carried out, and what carrying one out reports back (a probe that
//! could not be sent) is stepped in turn, until nothing is left. The agent's edge and the
//! simulated world of the monitor's tests both implement [`Effects`], so both run this loop.
//!
//! Invariant: the monitor is stepped once per input, in the order the inputs arose, and no
//! output is carried out before the outputs of the step before it.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Instant;

use crate::monitor::{Input, Monitor, Output};

/// What carries out the monitor's outputs.
pub trait Effects {
    /// Carries out `output` (the monitor as it is after the step, to read); what it reports
    /// back, if anything.
    fn carry_out(
        &mut self,
        monitor: &Monitor,
        output: Output,
    ) -> impl Future<Output = Option<Input>>;
}

/// Steps `monitor` with `input` at `clock()`, carries out the outputs with `effects`, and steps
/// again with whatever they report, until nothing is left.
pub async fn settle(
    monitor: &mut Monitor,
    effects: &mut impl Effects,
    clock: &impl Fn() -> Instant,
    input: Input,
) {
    let mut pending = VecDeque::from([input]);
    while let Some(input) = pending.pop_front() {
        for output in monitor.step(clock(), input) {
            if let Some(next) = effects.carry_out(monitor, output).await {
                pending.push_back(next);
            }
        }
    }
}
