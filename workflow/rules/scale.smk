rule scale:
    """Corrected observations of a map's datasets -> mdx2's scaling model (b per sweep,
    optional offset, detector and absorption factors), fitted to all of them together:
    one scales.nxs per dataset in results/maps/<map>/scales/."""
    input:
        script=script("scale"),
        corrected=lambda wc: [
            f"{RESULTS}/{ds}/corrected.nxs" for ds in map_datasets(wc.map)
        ],
    output:
        directory(f"{RESULTS}/maps/{{map}}/scales"),
    log:
        "logs/scale/{map}.log",
    benchmark:
        "benchmarks/scale/{map}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=6000,
        runtime=60,
    params:
        outfiles=lambda wc, output: " ".join(
            shlex.quote(f"{output[0]}/{ds}.nxs") for ds in map_datasets(wc.map)
        ),
        options=lambda wc: scale_options(wc.map),
        compat=compat_flag(),
    shell:
        "mkdir -p {output:q} && python {input.script:q} {input.corrected:q} "
        "{params.options} {params.compat} --outfile {params.outfiles} > {log:q} 2>&1"
