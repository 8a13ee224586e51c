"""Beyond one host: push a built repository to S3 and render what runs it on Kubernetes.

uri      `s3://bucket/prefix` (and Triton's `s3://http://host:port/bucket/prefix`) parsed and checked
remote   the boto3 client from the standard AWS credential chain, and S3 errors made readable
scan     the local repository as objects to upload, each checked against tsrepo.json
push     plan (upload / skip / delete per key) and apply it in an order a polling server can follow
pull     the pushed repository back: model metadata for rendering, or a verified local copy (materialize)
k8s      Deployment, Service, PDB, ServiceMonitor, HPA, prometheus-adapter rule, kustomization
kserve   an InferenceService for KServe's Triton runtime
render   the options both targets share, templates, and the all-or-nothing output folder
"""
