"""The student grader: :mod:`.checks` (argument checks, the call of the student's function, comparisons, model
snapshots) and :mod:`.graders` (one ``test_<exercise>`` per coding exercise; the notebooks reach them as
``tests.test_<exercise>``)."""
