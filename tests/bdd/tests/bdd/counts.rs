//! A writer wrapper that counts what cucumber reports — features, scenarios, and steps by
//! outcome, with undefined and ambiguous steps apart from other failures — for the closing
//! table and the verdict. It sits inside `fail_on_skipped()`, so an undefined step reaches it
//! as a failure with `StepError::NotFound`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cucumber::event::{self, Cucumber, Feature, Rule, Scenario, Step, StepError};
use cucumber::{Event, World, Writer, parser, writer};

#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub features: usize,
    pub scenarios: usize,
    pub scenarios_failed: usize,
    pub steps_passed: usize,
    pub steps_failed: usize,
    pub steps_skipped: usize,
    pub steps_undefined: usize,
    pub steps_ambiguous: usize,
    pub parse_errors: usize,
    pub hook_errors: usize,
}

impl Counts {
    pub fn shared() -> Arc<Mutex<Counts>> {
        Arc::new(Mutex::new(Counts::default()))
    }

    fn step<W>(&mut self, ev: &Step<W>) {
        match ev {
            Step::Started => {}
            Step::Passed(..) => self.steps_passed += 1,
            Step::Skipped => self.steps_skipped += 1,
            Step::Failed(_, _, _, StepError::NotFound) => self.steps_undefined += 1,
            Step::Failed(_, _, _, StepError::AmbiguousMatch(_)) => self.steps_ambiguous += 1,
            Step::Failed(..) => self.steps_failed += 1,
        }
    }

    fn scenario<W>(&mut self, ev: &Scenario<W>) {
        match ev {
            Scenario::Started => self.scenarios += 1,
            Scenario::Step(_, s) | Scenario::Background(_, s) => {
                if matches!(s, Step::Failed(..)) {
                    self.scenarios_failed += 1;
                }
                self.step(s);
            }
            Scenario::Hook(_, event::Hook::Failed(..)) => self.hook_errors += 1,
            _ => {}
        }
    }

    fn steps_total(&self) -> usize {
        self.steps_passed
            + self.steps_failed
            + self.steps_skipped
            + self.steps_undefined
            + self.steps_ambiguous
    }

    /// The closing table.
    pub fn table(&self, files: usize, took: Duration) -> String {
        format!(
            "\n== BDD journeys (tests/bdd) ==\n\
             feature files          {files}\n\
             features run           {}\n\
             scenarios              {} ({} failed)\n\
             steps                  {}\n\
             \x20 passed               {}\n\
             \x20 failed               {}\n\
             \x20 skipped              {}\n\
             \x20 undefined            {}\n\
             \x20 ambiguous            {}\n\
             parse errors           {}\n\
             hook errors            {}\n\
             wall time              {:.1} s\n",
            self.features,
            self.scenarios,
            self.scenarios_failed,
            self.steps_total(),
            self.steps_passed,
            self.steps_failed,
            self.steps_skipped,
            self.steps_undefined,
            self.steps_ambiguous,
            self.parse_errors,
            self.hook_errors,
            took.as_secs_f64()
        )
    }

    /// Ok only when everything ran and passed.
    pub fn verdict(&self, files: usize, filtered: bool) -> Result<(), String> {
        let mut why = Vec::new();
        for (n, what) in [
            (self.steps_failed, "failed steps"),
            (self.steps_skipped, "skipped steps"),
            (self.steps_undefined, "undefined steps"),
            (self.steps_ambiguous, "ambiguous steps"),
            (self.parse_errors, "feature files that do not parse"),
            (self.hook_errors, "failed hooks"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        if self.steps_passed == 0 {
            why.push("no step ran".into());
        }
        if !filtered && self.features != files {
            why.push(format!("{} of {files} feature files ran", self.features));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join(", "))
        }
    }
}

/// Forwards every event to `inner` after counting it.
pub struct Counted<Wr> {
    inner: Wr,
    counts: Arc<Mutex<Counts>>,
}

impl<Wr> Counted<Wr> {
    pub fn new(inner: Wr, counts: Arc<Mutex<Counts>>) -> Self {
        Counted { inner, counts }
    }
}

impl<W: World, Wr: Writer<W>> Writer<W> for Counted<Wr> {
    type Cli = Wr::Cli;

    async fn handle_event(&mut self, ev: parser::Result<Event<Cucumber<W>>>, cli: &Self::Cli) {
        {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            match &ev {
                Err(_) => c.parse_errors += 1,
                Ok(e) => match &e.value {
                    Cucumber::Feature(_, Feature::Started) => c.features += 1,
                    Cucumber::Feature(_, Feature::Scenario(_, s))
                    | Cucumber::Feature(_, Feature::Rule(_, Rule::Scenario(_, s))) => {
                        c.scenario(&s.event)
                    }
                    _ => {}
                },
            }
        }
        self.inner.handle_event(ev, cli).await;
    }
}

impl<Wr: writer::Normalized> writer::Normalized for Counted<Wr> {}
