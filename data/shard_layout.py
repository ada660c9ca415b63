"""Webdataset shards (img2dataset's layout, or scripts/make_shards.py's): a tar pattern, several joined with
'::', local paths or fsspec URLs; each sample an image with its captions in a .txt or under .json keys."""
import logging
import os

from data.shard_dataset import ShardBatches, first_captions, sample_captions, shard_notice
from data.shard_dataset import IMAGE_EXTENSIONS as SAMPLE_IMAGE_EXTENSIONS
from data.image_file import EncodedImage
from data.shard_source import (DEFAULT_TIMEOUT, URL_SCHEMES, checked_shards, epoch_samples, is_shard_source,
                               shard_samples, shard_weights)
from data.shard_table import read_shard_table
from data.sources import register_layout
from data.training_set import TrainingSet, global_batch
from utils.errors import UserError, first_line

logger = logging.getLogger(__name__)


@register_layout(is_shard_source)
class ShardSource:
    """Webdataset shards (see data/sources.py's Source for the methods)."""
    order_follows_workers = True  # batch k of an epoch comes from worker k % num-workers
    side_files = None

    def __init__(self, value, caption_key="txt", timeout=DEFAULT_TIMEOUT):
        self.value, self.timeout = value, timeout
        self.caption_keys = [key.strip() for key in caption_key.split(",") if key.strip()]
        if not self.caption_keys:
            raise UserError("caption-key: give txt or one or more .json keys")

    def validation_table(self, strict):
        return read_shard_table(self.value, self.caption_keys, strict, self.timeout)

    def training_set(self, options, transform_for, collate, job, batch_size):
        if options.compositional_negatives:
            raise UserError("compositional-negatives reads negatives.csv of a dataset folder; train-data names "
                            "shards")
        if options.any_order:
            raise UserError(f"batching {options.batching} picks any image for any batch, which a dataset folder "
                            "allows and streamed shards do not; train-data names shards (use batching: random)")
        urls, samples, sizes = epoch_samples(self.value, options.num_samples, self.timeout)
        transform, augmentation = transform_for(first_captions(urls, self.caption_keys, timeout=self.timeout),
                                                " (decided from the first shard's captions)")
        batch_size, local_batch = global_batch(batch_size, samples, job.world_size)
        steps = samples // batch_size
        if samples < 2:
            raise UserError(f"{self.value}: {samples} sample(s); contrastive training needs at least 2")
        if options.data_weights and not options.resampled:
            raise UserError("train-data-weights applies to resampled shards: set resampled true as well")
        weights = None
        if options.resampled:
            weights = shard_weights(self.value, options.data_weights) if options.data_weights else [1.0] * len(urls)
        dataset = ShardBatches(urls, transform, collate, self.caption_keys, options.seed, job.rank, job.world_size,
                               local_batch, steps, draft_size=options.image_size, resampled_weights=weights,
                               captions_per_image=options.captions_per_image, sizes=sizes, timeout=self.timeout)
        return TrainingSet(dataset, None, batch_size, local_batch, steps, f"{samples} samples from shards",
                           [augmentation, shard_notice(urls, samples, job.world_size, options.num_workers, weights,
                                                       exact=dataset.sizes is not None)])

    def captions(self, limit):
        captions = []
        for url in checked_shards(self.value, self.timeout):  # shard by shard until ``limit``
            try:
                captions += first_captions([url], self.caption_keys, limit - len(captions), self.timeout)
            except UserError:  # a shard without captions under caption-key
                continue
            if len(captions) >= limit:
                break
        if not captions:
            raise UserError(f"{self.value}: no caption could be read under caption-key "
                            f"'{','.join(self.caption_keys)}' (shards that cannot be read are skipped)")
        return captions[:limit]

    def gallery_units(self):
        return checked_shards(self.value, self.timeout)

    def unit_files(self, units):
        return None  # a shard's images are known only once it is read

    def gallery_entries(self, units):
        return (entry for url in units for entry in self._shard_entries(url))

    def _shard_entries(self, url):
        # local shards by absolute path: the service, or a later index.py run, may start in another folder
        location = url if url.startswith(URL_SCHEMES) else os.path.abspath(url)

        def unreadable(error):
            logger.warning(f"{url}: read error, rest of the shard skipped: {first_line(error)[:200]}")
            return True

        try:
            for sample in shard_samples(url, unreadable, self.timeout):
                extension = next((ext for ext in SAMPLE_IMAGE_EXTENSIONS if ext in sample), None)
                name = f"{os.path.basename(url)}/{sample['__key__']}"
                if extension is None:
                    logger.warning(f"skipped {name}: no image file in the sample")
                    continue
                try:
                    captions = sample_captions(sample, self.caption_keys)
                except (ValueError, UnicodeDecodeError):
                    captions = []  # a gallery item needs no caption
                member = sample["__members__"][extension]  # the tar's own name: IMG_1.JPG, not IMG_1.jpg
                yield EncodedImage(sample[extension], name), f"{location}#{member}", name, captions
        except (OSError, UserError) as error:  # the shard could not be opened
            logger.warning(f"skipped shard {url}: {first_line(error) or type(error).__name__}")
