"""A dataset folder: images/ plus captions.csv (filename,caption; several rows may share an image), and for
index.py also a plain folder of images."""
import logging
import os

from data.caption_table import read_caption_table
from data.datasets import TrainImages
from data.groups import FILE_NAME as GROUPS_FILE
from data.groups import read_groups
from data.image_file import IMAGE_EXTENSIONS, EncodedImage, ImageProblem, check_image_header, image_files
from data.negatives import FILE_NAME as NEGATIVES_FILE
from data.negatives import read_negatives
from data.sources import register_layout
from data.training_set import TrainingSet, global_batch
from utils.errors import UserError

logger = logging.getLogger(__name__)


def gallery_entry(record):
    """(image, file, name, captions) of an ImageRecord: its file, or its bytes when it holds them (a parquet row,
    a Chinese-CLIP image; ``path`` then says where the gallery finds it again)."""
    if record.data is not None:
        return EncodedImage(record.data, record.filename), record.path, record.filename, record.captions
    return os.path.abspath(record.path), os.path.abspath(record.path), record.filename, record.captions


@register_layout(None)  # the fallback: whatever no other layout claims
class FolderSource:
    """A dataset folder (see data/sources.py's Source for the methods)."""
    order_follows_workers = False  # per-image seeds: the data do not depend on the worker count

    def __init__(self, value, caption_key="txt", timeout=None):
        self.value, self.side_files = value, value

    def _table(self, strict):
        """The folder's CaptionTable (a layout of captioned image files overrides this alone)."""
        return read_caption_table(self.value, strict=strict)

    def validation_table(self, strict):
        return self._table(strict)

    def training_set(self, options, transform_for, collate, job, batch_size):
        table = self._table(options.strict)
        transform, augmentation = transform_for(table.captions, "")
        if len(table.images) < 2:
            raise UserError(f"{self.value}: {len(table.images)} usable image(s); contrastive training needs at "
                            f"least 2")
        notices = [augmentation]
        groups = self._groups(table, notices) if options.batching == "groups" else None
        negatives = self._negatives(table, notices, groups) if options.compositional_negatives else None
        dataset = TrainImages(table, transform, options.seed, draft_size=options.image_size,
                              captions_per_image=options.captions_per_image, negatives=negatives)
        batch_size, local_batch = global_batch(batch_size, len(dataset), job.world_size)
        return TrainingSet(dataset, table, batch_size, local_batch, len(dataset) // batch_size,
                           f"{len(dataset)} images, {len(table.captions)} captions", notices, groups)

    def captions(self, limit):
        return self._table(False).captions[:limit]

    def _negatives(self, table, notices, groups=None):
        """Per image of ``table``, {caption: its compositional negative} from negatives.csv. With ``groups``
        (batching groups), a negative that is a caption of a group-mate is left out: that image is in the
        batch, its caption there a positive, and as an extra negative it would push the mate from its own
        caption (a twin's captions are its original's negatives word for word)."""
        negatives = read_negatives(self.value, table)
        if not negatives:
            raise UserError(f"compositional-negatives: {self.value}/{NEGATIVES_FILE} not found or empty (columns "
                            f"filename, caption, negative; scripts/make_demo_dataset.py writes one for the shapes "
                            f"domain)")
        mates = {}
        for members in groups or ():
            captions = {caption for image in members for caption in table.images[image].captions}
            mates.update({image: captions - set(table.images[image].captions) for image in members})
        swapped, dropped = [{} for _ in table.images], 0
        for pair in negatives:
            if pair.negative in mates.get(pair.image, ()):
                dropped += 1
                continue
            swapped[pair.image][pair.caption] = pair.negative
        if dropped:
            notices.append(f"compositional negatives: {dropped} left out, each a caption of an image in the same "
                           f"group (in the batch already, as a positive of that image)")
        covered = sum(1 for entry in swapped if entry)
        notices.append(f"compositional negatives: {len(negatives)} swapped captions for {covered} of "
                       f"{len(table.images)} images; one per image joins each batch as an extra negative (an empty "
                       f"caption for images without one)")
        return swapped

    def _groups(self, table, notices):
        """The image groups of groups.csv (data/groups.py) that have two or more usable images."""
        if self.side_files is None:
            raise UserError(f"batching groups reads groups.csv beside the captions of a dataset folder; "
                            f"{self.value} has no such folder (use batching: random)")
        groups = read_groups(self.side_files, table)
        if groups is None:
            raise UserError(f"batching groups: {self.side_files}/{GROUPS_FILE} not found (columns filename, group; "
                            f"scripts/make_demo_dataset.py --twins writes one for the shapes domain)")
        groups = [members for members in groups if len(members) > 1]
        if not groups:
            raise UserError(f"batching groups: {self.side_files}/{GROUPS_FILE} names no group of two or more "
                            f"usable images")
        grouped = sum(len(members) for members in groups)
        notices.append(f"batching: groups, {len(groups)} groups of {grouped} of {len(table.images)} images, each "
                       f"group in one batch (groups.csv)")
        return groups

    def gallery_units(self):
        """The gallery entries themselves, [(image, file, name, captions)] (see Source.gallery_entries): the
        captioned images of the table, or every image below a plain folder (name: relative to the folder, the
        only form web clients see). Unusable images are logged and left out."""
        if self.captioned():
            return [gallery_entry(record) for record in self._table(False).images]
        if not os.path.isdir(self.value):
            raise UserError(f"data folder '{self.value}' not found")
        units = []
        for path in image_files(self.value):
            try:
                check_image_header(path)
                units.append((os.path.abspath(path), os.path.abspath(path), os.path.relpath(path, self.value), []))
            except ImageProblem as problem:
                logger.warning(f"skipped {path}: {problem}")
        if not units:
            raise UserError(f"no images found in '{self.value}' (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return units

    def captioned(self):
        """Whether the folder has captions (else index.py takes it as a plain folder of images)."""
        return os.path.isfile(os.path.join(self.value, "captions.csv"))

    def unit_files(self, units):
        return [file for _, file, _, _ in units]

    def gallery_entries(self, units):
        return units
