//! What a proxy asked for, for one type, kept small: a gateway's EDS subscription names every
//! EDS cluster (1,000 names per proxy), which is exactly the key set of the EDS map every proxy
//! shares. Such a subscription is stored as a reference to that map, not as a copy of its names.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::ResourceMap;
use super::connection::SubscriptionStatus;

#[derive(Debug, Clone, Default)]
pub(crate) struct Subscription {
    /// Every resource of the type, whatever the names say.
    pub wildcard: bool,
    names: Names,
}

#[derive(Debug, Clone)]
enum Names {
    Set(BTreeSet<String>),
    /// Exactly the names of this map's resources.
    KeysOf(Arc<ResourceMap>),
}

impl Default for Names {
    fn default() -> Self {
        Names::Set(BTreeSet::new())
    }
}

impl Subscription {
    /// Whether the proxy asked for `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.wildcard || self.has_name(name)
    }

    /// Whether `name` is among the names asked for (a wildcard aside).
    fn has_name(&self, name: &str) -> bool {
        match &self.names {
            Names::Set(set) => set.contains(name),
            Names::KeysOf(map) => map.contains_key(name),
        }
    }

    pub fn name_count(&self) -> usize {
        match &self.names {
            Names::Set(set) => set.len(),
            Names::KeysOf(map) => map.len(),
        }
    }

    /// The names asked for, in order.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.names {
            Names::Set(set) => Box::new(set.iter().map(String::as_str)),
            Names::KeysOf(map) => Box::new(map.keys().map(String::as_str)),
        }
    }

    /// Whether the subscription selects every resource of `map`, known without a walk.
    pub fn is_all_of(&self, map: &Arc<ResourceMap>) -> bool {
        self.wildcard || matches!(&self.names, Names::KeysOf(keys) if Arc::ptr_eq(keys, map))
    }

    /// SotW: the request's names replace the subscription. Returns whether it changed, and
    /// whether it grew (names or a wildcard the proxy did not ask for before). `current` is the
    /// proxy's map of the type, which a full set of names is stored as.
    pub fn replace(
        &mut self,
        wildcard: bool,
        mut names: Vec<String>,
        current: &Arc<ResourceMap>,
    ) -> (bool, bool) {
        names.retain(|n| n != "*");
        names.sort_unstable();
        names.dedup();
        let (dropped, added) = differences(self.names(), names.iter().map(String::as_str));
        let grew = added || (wildcard && !self.wildcard);
        let changed = dropped || added || wildcard != self.wildcard;
        if dropped || added {
            self.names = compact(names, current);
        }
        self.wildcard = wildcard;
        (changed, grew)
    }

    /// Delta: adds names (`*` turns on the wildcard). Returns the names that were not asked
    /// for before, in order.
    pub fn subscribe(&mut self, names: Vec<String>, current: &Arc<ResourceMap>) -> Vec<String> {
        let mut asked = Vec::new();
        for name in names {
            if name == "*" {
                self.wildcard = true;
            } else if !self.has_name(&name) {
                asked.push(name);
            }
        }
        asked.sort_unstable();
        asked.dedup();
        if !asked.is_empty() {
            let mut set = self.take_set();
            set.extend(asked.iter().cloned());
            self.names = compact(set.into_iter().collect(), current);
        }
        asked
    }

    /// Delta: removes names (`*` turns off the wildcard).
    pub fn unsubscribe(&mut self, names: &[String], current: &Arc<ResourceMap>) {
        if names.iter().any(|n| n == "*") {
            self.wildcard = false;
        }
        if names.iter().any(|n| n != "*" && self.has_name(n)) {
            let mut set = self.take_set();
            for name in names {
                set.remove(name);
            }
            self.names = compact(set.into_iter().collect(), current);
        }
    }

    /// `new` has exactly the names of `old`: a subscription to all of `old` is one to `new`,
    /// and stops keeping `old` alive.
    pub fn rebase(&mut self, old: &Arc<ResourceMap>, new: &Arc<ResourceMap>) {
        if let Names::KeysOf(keys) = &self.names
            && Arc::ptr_eq(keys, old)
        {
            self.names = Names::KeysOf(Arc::clone(new));
        }
    }

    pub fn status(&self) -> SubscriptionStatus {
        SubscriptionStatus {
            wildcard: self.wildcard,
            names: self.name_count(),
        }
    }

    fn take_set(&mut self) -> BTreeSet<String> {
        match std::mem::take(&mut self.names) {
            Names::Set(set) => set,
            Names::KeysOf(map) => map.keys().cloned().collect(),
        }
    }
}

/// Sorted, deduplicated `names` as a reference to `current` when they are its key set.
fn compact(names: Vec<String>, current: &Arc<ResourceMap>) -> Names {
    let all = !names.is_empty()
        && names.len() == current.len()
        && names.iter().zip(current.keys()).all(|(a, b)| a == b);
    if all {
        Names::KeysOf(Arc::clone(current))
    } else {
        Names::Set(names.into_iter().collect())
    }
}

/// Of two sorted sequences of distinct names: whether `a` has names `b` lacks, and whether
/// `b` has names `a` lacks. One merge pass, no allocation.
fn differences<'a>(
    a: impl Iterator<Item = &'a str>,
    b: impl Iterator<Item = &'a str>,
) -> (bool, bool) {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let (mut only_a, mut only_b) = (false, false);
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return (only_a, only_b),
            (Some(_), None) => return (true, only_b),
            (None, Some(_)) => return (only_a, true),
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => {
                    a.next();
                    b.next();
                }
                Ordering::Less => {
                    only_a = true;
                    a.next();
                }
                Ordering::Greater => {
                    only_b = true;
                    b.next();
                }
            },
        }
        if only_a && only_b {
            return (true, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::tests::cla;

    fn map(names: &[&str]) -> Arc<ResourceMap> {
        Arc::new(names.iter().map(|n| (n.to_string(), cla(n, 1))).collect())
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_full_set_of_names_is_the_map() {
        let m = map(&["a", "b"]);
        let mut s = Subscription::default();
        assert_eq!(
            s.replace(false, strings(&["b", "a", "b"]), &m),
            (true, true)
        );
        assert!(s.is_all_of(&m));
        assert_eq!(
            s.replace(false, strings(&["a", "b"]), &m),
            (false, false),
            "unchanged"
        );
        assert_eq!(
            s.replace(false, strings(&["a"]), &m),
            (true, false),
            "shrank"
        );
        assert!(!s.is_all_of(&m) && s.covers("a") && !s.covers("b"));
        let m2 = map(&["a", "b"]);
        s.replace(false, strings(&["a", "b"]), &m);
        s.rebase(&m, &m2);
        assert!(s.is_all_of(&m2));
    }

    #[test]
    fn delta_subscribe_and_unsubscribe() {
        let m = map(&["a", "b"]);
        let mut s = Subscription::default();
        assert_eq!(s.subscribe(strings(&["a", "x", "a"]), &m), ["a", "x"]);
        assert_eq!(s.subscribe(strings(&["a", "*"]), &m), Vec::<String>::new());
        assert!(s.wildcard);
        s.unsubscribe(&strings(&["x", "*"]), &m);
        assert!(!s.wildcard && s.covers("a") && !s.covers("x"));
        s.subscribe(strings(&["b"]), &m);
        assert!(s.is_all_of(&m));
        assert_eq!(s.names().collect::<Vec<_>>(), ["a", "b"]);
    }
}
