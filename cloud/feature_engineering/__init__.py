"""Feature engineering: raw readings in the cloud store -> leakage-free, ML-ready features
in ``der_features``.

``resample`` puts each site on a regular grid; ``calendar``, ``history``, ``physics`` and
``market`` are pure feature functions of that grid; ``pipeline`` assembles the versioned
feature set; ``job`` runs it incrementally against any :class:`~cloud.store.base.CloudStore`
and ``status`` reports what is stored.
"""
