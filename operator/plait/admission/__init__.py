"""``plait webhook``: the validating admission webhook, a small stateless process.

It checks what is inside an object (the same validation the reconciler runs) and, on every
create and every change of a spec, that the requesting user may themselves use each
ServiceAccount, Secret and Integration the object would make the operator use for them.
It needs no database and runs apart from the operator, so admission stays up while an
operator restarts.
"""
