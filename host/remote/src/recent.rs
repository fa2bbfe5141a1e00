//! The last few large values a phase's jobs share (a context put by the controller, or fetched
//! by a worker), so that the jobs of a phase handle each once.

/// How many are remembered: a controller or a worker serves a few phases at a time.
const KEPT: usize = 8;

/// Keys and their values in the order they came; past [`KEPT`], the oldest is forgotten.
pub(crate) struct Recent<K, V>(Vec<(K, V)>);

impl<K, V: Clone> Recent<K, V> {
    pub(crate) const fn new() -> Self {
        Recent(Vec::new())
    }

    /// The value of the first key that `matches`.
    pub(crate) fn find(&self, matches: impl Fn(&K) -> bool) -> Option<V> {
        self.0
            .iter()
            .find(|(key, _)| matches(key))
            .map(|(_, value)| value.clone())
    }

    pub(crate) fn remember(&mut self, key: K, value: V) {
        self.0.push((key, value));
        if self.0.len() > KEPT {
            self.0.remove(0);
        }
    }
}
