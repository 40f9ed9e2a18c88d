"""The compiled TokenMonster scanner (``_tokenmonster``, from ``_tokenmonster.c``).

Built by ``pip install`` where a C compiler exists; absent otherwise, and then
``remote_code/tokenmonster.py`` uses its pure-Python scan. Import it only through
``stentor_hub.tokenmonster`` (``Vocab(engine=...)``, ``DEFAULT_ENGINE``)."""
