"""Model components: one file per part, composed in :mod:`ovseg.modeling.fcclip`."""
