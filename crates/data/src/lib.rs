//! Reading datasets: the indexers of Market-1501, DukeMTMC-reID, CUHK03 and synthetic layouts, the official split
//! sizes they are checked against, and image decoding. What the index stage computes, and what train and eval read.

pub mod image;
pub mod index;
pub mod official;
pub mod resize;
pub mod stage;

pub use index::{DatasetIndex, Format};
