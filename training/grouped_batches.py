"""Grouped batches: the images of each group (a dataset's groups.csv, data/groups.py) in one batch.

A twin with two objects' places exchanged is the hardest negative an image can have; in a batch with it the
loss must bind attributes to objects in both directions (each caption against the twin image, each image
against the twin's caption), where random batches seldom pair them. The order is drawn afresh for every
epoch from the seed, so a resumed epoch sees the same batches without storing them.
"""
import torch

from training.hard_batches import MinedOrder


def grouped_order(groups, size, batch_size, generator):
    """A permutation of ``size`` images in which each group's members are adjacent within one batch.

    groups: disjoint lists of image indices in [0, size); images in none are groups of one. A group larger
    than ``batch_size`` is cut into batch-sized pieces. Groups and single images come in random order; a
    group that does not fit the rest of the current batch waits for the next one, which it starts, while
    the images after it fill the current batch. Groups still waiting when every unit is placed come right
    after the last full batch, the unfinished batch's units after them, and there a group may span two
    batches: when too few single images are left to fill the batches (groups of 2 in even batches never
    are). Returns LongTensor [size].
    """
    placed = torch.zeros(size, dtype=torch.bool)
    units = []
    for members in groups:
        placed[members] = True
        units += [members[start:start + batch_size] for start in range(0, len(members), batch_size)]
    units += [[index] for index in (~placed).nonzero().flatten().tolist()]
    order, waiting = [], []
    for position in torch.randperm(len(units), generator=generator).tolist():
        unit = units[position]
        if len(unit) > batch_size - len(order) % batch_size:
            waiting.append(unit)
            continue
        order += unit
        if len(order) % batch_size == 0:  # a batch is full: the waiting groups start the next one
            while waiting and len(waiting[0]) <= batch_size - len(order) % batch_size:
                order += waiting.pop(0)
    if waiting:  # after the last full batch, before the units of the unfinished one (drop_last drops those)
        boundary = len(order) - len(order) % batch_size
        order, tail = order[:boundary], order[boundary:]
        for unit in waiting:
            order += unit
        order += tail
    return torch.tensor(order, dtype=torch.long)


class GroupedOrder(MinedOrder):
    """This rank's part of a grouped global order (MinedOrder's slicing), drawn for each epoch by set_epoch:
    every rank draws the same order from the same seed."""

    def __init__(self, groups, size, batch_size, rank, world_size, seed):  # no placeholder draw (global RNG)
        self.size, self.batch_size, self.rank, self.world_size = size, batch_size, rank, world_size
        self.groups, self.seed = groups, seed
        self.set_epoch(0)

    def set_epoch(self, epoch):
        generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        self.order = grouped_order(self.groups, self.size, self.batch_size, generator)
