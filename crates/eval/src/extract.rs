//! Test-time features: images decoded and resized in parallel, pushed through the backbone alone in eval mode
//! (BatchNorm running statistics, no graph head), optionally averaged with the features of the mirrored image.

use super::array::Matrix;
use candle_core::{Device, Tensor};
use mgat_data::image::{ImageError, PinnedTree, normalized};
use mgat_data::index::Item;
use mgat_model::resnet::ResNet;
use rayon::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Size and batching of extraction.
pub struct Extraction<'a> {
    pub backbone: &'a ResNet,
    pub device: &'a Device,
    pub height: u32,
    pub width: u32,
    pub flip: bool,
    pub batch_size: usize,
}

impl Extraction<'_> {
    /// One feature row per item (images of `dataset`, each read against its pinned digest), calling
    /// `on_batch(images done)` as it goes.
    pub fn features(
        &self,
        dataset: &PinnedTree,
        items: &[Item],
        on_batch: &dyn Fn(usize),
    ) -> Result<Matrix, ExtractError> {
        let (h, w) = (self.height as usize, self.width as usize);
        let mut data = Vec::new();
        for chunk in items.chunks(self.batch_size.max(1)) {
            let images: Vec<_> = chunk
                .par_iter()
                .map(|it| dataset.load_resized(&it.path, self.height, self.width))
                .collect::<Result<_, _>>()?;
            let run = |mirror: bool| -> Result<Tensor, ExtractError> {
                let values: Vec<f32> = images
                    .par_iter()
                    .flat_map_iter(|img| normalized(img, mirror))
                    .collect();
                let x = Tensor::from_vec(values, (chunk.len(), 3, h, w), self.device)?;
                Ok(self.backbone.forward(&x, false)?)
            };
            let mut f = run(false)?;
            if self.flip {
                f = ((f + run(true)?)? * 0.5)?;
            }
            data.extend(f.flatten_all()?.to_vec1::<f32>()?);
            on_batch(chunk.len());
        }
        let cols = self.backbone.out_dim();
        Ok(Matrix {
            rows: items.len(),
            cols,
            data: data.into(),
        })
    }
}
