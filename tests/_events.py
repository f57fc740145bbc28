"""Reading a run's TensorBoard events the way TensorBoard does (its own reader)."""


def tensorboard_scalars(logdir, tag):
    """[(step, value)] of ``tag`` as TensorBoard shows them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
