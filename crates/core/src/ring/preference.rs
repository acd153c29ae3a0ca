//! Preference lists: the N replicas of a partition, walking the ring clockwise.

use super::Ring;
use crate::PartitionId;

impl Ring {
    /// Node indexes of the preference list of `partition`, in pick order (see
    /// [`Ring::preference_list`]).
    pub(super) fn preference_indexes(&self, partition: PartitionId, n: usize) -> Vec<usize> {
        let p = self.index(partition) as u32;
        let q = self.partitions;
        // Each node's clockwise distance from p to the first partition it owns. Sorted, that is
        // the order in which a walk of the ring (p's owner, p+1's, ...) meets the physical nodes,
        // without walking: O(nodes log Q) whatever the shares. Nodes that own no partition (more
        // nodes than partitions) come last, in id order.
        let mut walk: Vec<(u32, usize)> = self
            .owned
            .iter()
            .enumerate()
            .map(|(i, parts)| {
                let distance = match parts.first() {
                    None => u32::MAX,
                    Some(&first) => {
                        let next = parts.get(parts.partition_point(|&x| x < p));
                        next.map_or(first + q, |&x| x) - p
                    }
                };
                (distance, i)
            })
            .collect();
        walk.sort_unstable();

        let n = n.min(walk.len());
        let mut picked = Vec::with_capacity(n);
        let mut taken = vec![false; walk.len()];
        let mut per_dc = vec![0usize; self.dc_count];
        let mut per_rack = vec![0usize; self.rack_count];
        for _ in 0..n {
            let untaken = walk.iter().enumerate().filter(|&(_, &(_, i))| !taken[i]);
            let i = if self.dc_factors.is_empty() {
                // The first node in walk order among those whose data center, then rack, holds
                // the fewest replicas so far. With >= N data centers that is always a new data
                // center; with fewer, replicas go round the data centers and, inside each,
                // round its racks.
                untaken
                    .map(|(pos, &(_, i))| {
                        let (dc, rack) = (self.dc_of[i] as usize, self.rack_of[i] as usize);
                        (per_dc[dc], per_rack[rack], pos, i)
                    })
                    .min()
                    .expect("n <= members, so an untaken node is left")
                    .3
            } else {
                // Per-DC replication: among nodes whose data center still wants replicas, the
                // first in walk order whose rack holds the fewest; once every count is met (or
                // no such node is left), plain walk order.
                let wanted = |i: usize| {
                    let dc = self.dc_of[i] as usize;
                    per_dc[dc] < self.dc_factors[dc]
                };
                let mut untaken = untaken.peekable();
                let first = untaken.peek().map(|&(_, &(_, i))| i);
                untaken
                    .filter(|&(_, &(_, i))| wanted(i))
                    .map(|(pos, &(_, i))| (per_rack[self.rack_of[i] as usize], pos, i))
                    .min()
                    .map(|(_, _, i)| i)
                    .or(first)
                    .expect("n <= members, so an untaken node is left")
            };
            taken[i] = true;
            per_dc[self.dc_of[i] as usize] += 1;
            per_rack[self.rack_of[i] as usize] += 1;
            picked.push(i);
        }
        picked
    }
}
