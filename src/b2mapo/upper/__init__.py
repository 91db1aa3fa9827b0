"""B2MAPO's upper layer: the DAG generator (``generator``), DAG sampling and layering (``dag``),
the learned round that trains it beside π and π_ind (``round``), and the DAG history
(``history``). The generic core (trainer, engine, runner) never imports this package; the parts
factory (``b2mapo.parts``) picks its round for ``partition=learned``."""
