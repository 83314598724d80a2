//! The shares the plugin advertises: `shares_per_gpu` device entries per GPU, named
//! `gpu<G>-share<S>`. The kubelet counts them as units of the extended resource; which share of
//! a GPU a container gets does not matter, only which GPU and how many.

use std::collections::BTreeMap;
use std::fmt;

/// One advertised unit: share `share` of GPU `gpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShareId {
    pub gpu: u32,
    pub share: u32,
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gpu{}-share{}", self.gpu, self.share)
    }
}

/// The inventory: `gpus` GPUs cut into `shares_per_gpu` shares each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub gpus: u32,
    pub shares_per_gpu: u32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error(
        "unknown device ID {0:?}: this plugin advertises gpu<G>-share<S> for G < {1} and S < {2}"
    )]
    Unknown(String, u32, u32),
    #[error("device ID {0} is named twice in one request")]
    Duplicate(ShareId),
    #[error("asked for {asked} shares, but this node has {total} ({gpus} GPU(s) with {per_gpu} shares each)")]
    TooMany {
        asked: usize,
        total: u32,
        gpus: u32,
        per_gpu: u32,
    },
    #[error("asked for {asked} shares, but only {available} are available")]
    NotAvailable { asked: usize, available: usize },
    #[error("asked for {0} shares: a request names at least one")]
    Empty(i64),
}

impl Inventory {
    pub fn total(&self) -> u32 {
        self.gpus * self.shares_per_gpu
    }

    /// Every share, GPU by GPU.
    pub fn all(&self) -> impl Iterator<Item = ShareId> + '_ {
        (0..self.gpus)
            .flat_map(move |gpu| (0..self.shares_per_gpu).map(move |share| ShareId { gpu, share }))
    }

    /// Reads one ID the kubelet sent back; only IDs this inventory advertises are accepted.
    pub fn parse(&self, id: &str) -> Result<ShareId, ShareError> {
        let unknown = || ShareError::Unknown(id.to_owned(), self.gpus, self.shares_per_gpu);
        let rest = id.strip_prefix("gpu").ok_or_else(unknown)?;
        let (g, s) = rest.split_once("-share").ok_or_else(unknown)?;
        let num = |t: &str| -> Option<u32> {
            // Canonical decimal only, so one share has exactly one name.
            if t.is_empty() || (t.len() > 1 && t.starts_with('0')) {
                return None;
            }
            t.parse().ok()
        };
        match (num(g), num(s)) {
            (Some(gpu), Some(share)) if gpu < self.gpus && share < self.shares_per_gpu => {
                Ok(ShareId { gpu, share })
            }
            _ => Err(unknown()),
        }
    }

    /// Reads the IDs of one container's request: each known, none twice, and no more than the
    /// node has.
    pub fn parse_request(&self, ids: &[String]) -> Result<Vec<ShareId>, ShareError> {
        if ids.len() > self.total() as usize {
            return Err(self.too_many(ids.len()));
        }
        if ids.is_empty() {
            return Err(ShareError::Empty(0));
        }
        let mut out: Vec<ShareId> = Vec::with_capacity(ids.len());
        for id in ids {
            let s = self.parse(id)?;
            if out.contains(&s) {
                return Err(ShareError::Duplicate(s));
            }
            out.push(s);
        }
        Ok(out)
    }

    fn too_many(&self, asked: usize) -> ShareError {
        ShareError::TooMany {
            asked,
            total: self.total(),
            gpus: self.gpus,
            per_gpu: self.shares_per_gpu,
        }
    }

    /// The shares to prefer for a container that needs `size` of them, from `available`, with
    /// `must_include` among them. A container's shares should sit on one GPU (its memory and
    /// its kernels are there), so: the GPU the required shares are on if the rest fits there,
    /// else the fullest GPU that still fits the whole request (best fit keeps whole GPUs free
    /// for large requests), else shares from the GPUs with most room first.
    pub fn preferred(
        &self,
        available: &[String],
        must_include: &[String],
        size: i64,
    ) -> Result<Vec<ShareId>, ShareError> {
        if size < 1 {
            return Err(ShareError::Empty(size));
        }
        let size = size as usize;
        let available = self.parse_request(available)?;
        let mut chosen = self.parse_request(must_include).or_else(|e| match e {
            ShareError::Empty(_) => Ok(Vec::new()),
            e => Err(e),
        })?;
        if size > available.len() || chosen.len() > size {
            return Err(ShareError::NotAvailable {
                asked: size.max(chosen.len()),
                available: available.len(),
            });
        }
        let mut free: BTreeMap<u32, Vec<ShareId>> = BTreeMap::new();
        for s in available.iter().filter(|s| !chosen.contains(s)) {
            free.entry(s.gpu).or_default().push(*s);
        }
        let need = size - chosen.len();
        let fits = |g: &u32| free.get(g).is_some_and(|v| v.len() >= need);
        let home = chosen
            .first()
            .map(|s| s.gpu)
            .filter(|g| chosen.iter().all(|s| s.gpu == *g) && fits(g))
            .or_else(|| {
                free.iter()
                    .filter(|(_, v)| v.len() >= need)
                    .min_by_key(|(g, v)| (v.len(), **g))
                    .map(|(g, _)| *g)
            });
        let mut order: Vec<u32> = free.keys().copied().collect();
        order.sort_by_key(|g| (Some(*g) != home, std::cmp::Reverse(free[g].len()), *g));
        for g in order {
            for s in &free[&g] {
                if chosen.len() == size {
                    break;
                }
                chosen.push(*s);
            }
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: Inventory = Inventory {
        gpus: 2,
        shares_per_gpu: 4,
    };

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ids_round_trip_and_strangers_are_refused() {
        for s in INV.all() {
            assert_eq!(INV.parse(&s.to_string()), Ok(s));
        }
        assert_eq!(INV.all().count(), 8);
        for bad in [
            "gpu2-share0",
            "gpu0-share4",
            "gpu00-share1",
            "gpu0-share",
            "gpu-share1",
            "GPU0-share1",
            "gpu0-share1x",
            "nvidia0",
            "",
        ] {
            assert!(
                matches!(INV.parse(bad), Err(ShareError::Unknown(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn requests_are_checked() {
        assert_eq!(
            INV.parse_request(&ids(&["gpu1-share0", "gpu1-share0"])),
            Err(ShareError::Duplicate(ShareId { gpu: 1, share: 0 }))
        );
        let nine = ids(&["gpu0-share0"; 9]);
        assert_eq!(
            INV.parse_request(&nine).unwrap_err().to_string(),
            "asked for 9 shares, but this node has 8 (2 GPU(s) with 4 shares each)"
        );
        assert_eq!(INV.parse_request(&[]), Err(ShareError::Empty(0)));
    }

    #[test]
    fn preferred_keeps_a_container_on_one_gpu() {
        // GPU 0 has one share left, GPU 1 three: two shares go to GPU 1.
        let avail = ids(&["gpu0-share3", "gpu1-share1", "gpu1-share2", "gpu1-share3"]);
        let p = INV.preferred(&avail, &[], 2).unwrap();
        assert!(p.iter().all(|s| s.gpu == 1), "{p:?}");
        // One share: best fit takes GPU 0's last one, keeping GPU 1's room.
        let p = INV.preferred(&avail, &[], 1).unwrap();
        assert_eq!(p, vec![ShareId { gpu: 0, share: 3 }]);
        // A required share pins its GPU when the rest fits there.
        let p = INV.preferred(&avail, &ids(&["gpu1-share3"]), 3).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|s| s.gpu == 1), "{p:?}");
        assert_eq!(p[0], ShareId { gpu: 1, share: 3 });
        // Nothing fits on one GPU: spread, largest room first.
        let p = INV.preferred(&avail, &[], 4).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.iter().filter(|s| s.gpu == 1).count(), 3);
        // More than is available.
        assert!(matches!(
            INV.preferred(&avail, &[], 5),
            Err(ShareError::NotAvailable {
                asked: 5,
                available: 4
            })
        ));
        assert_eq!(INV.preferred(&avail, &[], 0), Err(ShareError::Empty(0)));
    }
}
