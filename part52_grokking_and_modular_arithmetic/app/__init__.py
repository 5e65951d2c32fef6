"""The applications: the command line (:mod:`.cli`, which collects the commands each subpackage registers) and the
main job, the solutions notebook as an offline HTML report (:mod:`.report`)."""
