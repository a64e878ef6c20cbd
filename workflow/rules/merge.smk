rule merge:
    """Corrected observations of a map's datasets -> one intensity per asymmetric-unit voxel,
    with half-data splits -> merged.nxs."""
    input:
        script=script("merge"),
        corrected=lambda wc: [
            f"{RESULTS}/{ds}/corrected.nxs" for ds in map_datasets(wc.map)
        ],
        geom=lambda wc: f"{RESULTS}/{map_datasets(wc.map)[0]}/geometry.nxs",
        scales=lambda wc: (
            rules.scale.output[0].format(map=wc.map) if map_scaled(wc.map) else []
        ),
    output:
        f"{RESULTS}/maps/{{map}}/merged.nxs",
    log:
        "logs/merge/{map}.log",
    benchmark:
        "benchmarks/merge/{map}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        outlier=lambda wc: (
            f"--outlier {map_setting(wc.map, 'merge', 'outlier')}"
            if map_setting(wc.map, "merge", "outlier") is not None
            else ""
        ),
        split=lambda wc: map_setting(wc.map, "merge", "split"),
        seed=lambda wc: map_setting(wc.map, "merge", "seed"),
        scale=lambda wc, input: (
            "--scale "
            + " ".join(
                shlex.quote(f"{input.scales}/{ds}.nxs") for ds in map_datasets(wc.map)
            )
            if input.scales
            else ""
        ),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.corrected:q} {params.scale} {params.outlier} "
        "--split {params.split} --seed {params.seed} --geometry {input.geom:q} "
        "{params.compat} --outfile {output:q} > {log:q} 2>&1"


rule map:
    """The merged asymmetric unit expanded by the Laue group onto a dense h, k, l grid
    (NXdata, plottable in NeXpy) -> map.nxs."""
    input:
        script=script("map"),
        merged=rules.merge.output[0],
        geom=lambda wc: f"{RESULTS}/{map_datasets(wc.map)[0]}/geometry.nxs",
    output:
        f"{RESULTS}/maps/{{map}}/map.nxs",
    log:
        "logs/map/{map}.log",
    benchmark:
        "benchmarks/map/{map}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        limits=lambda wc: (
            "--limits " + " ".join(map(str, map_setting(wc.map, "map", "limits")))
            if map_setting(wc.map, "map", "limits")
            else ""
        ),
        p1=lambda wc: (
            "--p1" if setting(map_datasets(wc.map)[0], "correct", "p1") else ""
        ),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.merged:q} {params.limits} "
        "{params.p1} {params.compat} --outfile {output:q} > {log:q} 2>&1"
