//! A place kept with each stored document for what the HTTP layer renders
//! from it (its time-dependent response headers, see
//! [`crate::http::cache_headers`]), so rendering happens once per change of
//! its inputs (about once a second per document under traffic), not once
//! per request, whichever worker serves it and however many documents are
//! served in turn.
//!
//! The cache does not know HTTP (it sits below it), so the value is held
//! as `dyn Any` and the HTTP layer names its type. Readers never block
//! (arc-swap); a writer replaces the whole value, so a reader sees either
//! the old or the new rendering, each complete.

use std::any::Any;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

type Erased = Box<dyn Any + Send + Sync>;

/// The last value rendered for one document.
#[derive(Default)]
pub struct RenderMemo(ArcSwapOption<Erased>);

impl std::fmt::Debug for RenderMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenderMemo")
    }
}

impl RenderMemo {
    /// The kept value if it is a `V` that `still_holds` accepts; otherwise
    /// `render()`, kept for the next call.
    pub fn reuse_or_render<V, R>(&self, still_holds: impl FnOnce(&V) -> bool, render: R) -> V
    where
        V: Any + Clone + Send + Sync,
        R: FnOnce() -> V,
    {
        {
            let kept = self.0.load();
            if let Some(v) = kept.as_deref().and_then(|b| (**b).downcast_ref::<V>()) {
                if still_holds(v) {
                    return v.clone();
                }
            }
        }
        let v = render();
        self.0.store(Some(Arc::new(Box::new(v.clone()))));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_again_only_when_the_value_no_longer_holds() {
        let memo = RenderMemo::default();
        let mut renders = 0;
        let mut get = |key: u64| {
            memo.reuse_or_render(
                |(k, _): &(u64, String)| *k == key,
                || {
                    renders += 1;
                    (key, key.to_string())
                },
            )
        };
        assert_eq!(get(1).1, "1");
        assert_eq!(get(1).1, "1");
        assert_eq!(get(2).1, "2");
        assert_eq!(get(2).1, "2");
        assert_eq!(renders, 2);
    }
}
