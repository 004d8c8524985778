"""A trial's life: the slot state machine and claims (:mod:`.lifecycle`), recovery of silent
holders (:mod:`.recovery`), the guard on Optuna writes (:mod:`.guard`), ask/tell for a client's own
training (:mod:`.ask_tell`) and trials brought in whole (:mod:`.imports`)."""
