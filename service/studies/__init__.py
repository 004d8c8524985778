"""Studies as the service holds them: requests validated into plans (:mod:`.requests`), created and
deleted (:mod:`.admin`), warm-started (:mod:`.warm_start`), confirmed (:mod:`.confirmation`) and
read back (:mod:`.progress`, :mod:`.best_configs`, :mod:`.trial_list`, :mod:`.catalog`)."""
