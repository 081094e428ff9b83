"""The tiny CLIP `coop-tiny`: drawing (`draw`), bundled data and captions (`data`), pretraining (`pretrain`), downstream tasks (`tasks`), evaluation (`eval`)"""
